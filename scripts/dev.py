#!/usr/bin/env python3
"""Set up the project's environment (once) and run dsim or the test suite in it.

    python3 scripts/dev.py run [DSIM ARGS...]     # the simulator, defaults for one machine
    python3 scripts/dev.py test [PYTEST ARGS...]  # the whole test suite

The environment is ``.venv`` at the project root, with dsim installed in
editable mode plus the extras the command needs. It is (re)installed only when
``pyproject.toml`` changed or an extra is missing, so a second run starts at
once. Needs nothing but Python 3.11+.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dsim-installed.json"
EXTRAS = {"run": [], "test": ["test"]}


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_env(extras: list[str]) -> None:
    """Create the venv and install dsim (with `extras`) unless already done."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        stamp = {}
    have = set(stamp.get("extras", [])) if stamp.get("pyproject") == digest else set()
    if python().exists() and set(extras) <= have:
        return
    if not python().exists():
        print(f"dev.py: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = sorted(have | set(extras))
    target = f".[{','.join(wanted)}]" if wanted else "."
    print(f"dev.py: installing dsim{target[1:]} into {VENV}", file=sys.stderr)
    subprocess.run(
        [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-e", target],
        cwd=ROOT,
        check=True,
    )
    STAMP.write_text(json.dumps({"pyproject": digest, "extras": wanted}))


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in EXTRAS:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: dev.py {run,test} [ARGS...]", file=sys.stderr)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    ensure_env(EXTRAS[command])
    if command == "run":
        argv = [str(python()), "-m", "dsim", *args]
    else:
        argv = [str(python()), "-m", "pytest", *args]
    os.chdir(ROOT)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
