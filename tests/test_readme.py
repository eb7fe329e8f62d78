"""The README's example test for correlator teams runs as written, in a fresh pytest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def example(name: str = "example-test") -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {name} -->\n```python\n(.*?)```\n<!-- /{name} -->", text, re.S)
    assert match, f"README has no {name}"
    return match.group(1)


def test_the_readme_api_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(example("example-api"))
    result = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sent, heaps, signals = result.stdout.splitlines()[0].split(" ", 2)
    assert int(sent) == int(heaps) > 2 * 2000  # both polarisations, past the switch
    assert signals.startswith("cw(0.5, ")
    assert result.stdout.splitlines()[1].startswith("5120 ")


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "test_correlator_example.py").write_text(example())
    # A project of its own: default (strict) asyncio mode, the plugin from its entry point.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_correlator_example.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
