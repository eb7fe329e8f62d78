#!/usr/bin/env python3
"""Set up the project's environment (once) and run dsim or the test suite in it.

    python3 scripts/dev.py run [DSIM ARGS...]     # the simulator, defaults for one machine
    python3 scripts/dev.py test [PYTEST ARGS...]  # the whole test suite
    python3 scripts/dev.py check                  # ruff and mypy, as pre-commit runs them
    python3 scripts/dev.py --gso test             # the suite with spead2 built with GSO

The environment is ``.venv`` at the project root, with dsim installed in
editable mode plus the extras the command needs. It is (re)installed only when
``pyproject.toml`` changed or an extra is missing, so a second run starts at
once. Needs nothing but Python 3.11+.

With ``--gso`` the environment is ``.venv-gso`` instead, and spead2 in it is
built from source with UDP segmentation offload by ``scripts/build_spead2.sh``
(Debian packages, about two minutes the first time); the tests are then told
to expect GSO (``DSIM_EXPECT_GSO=1``).
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
EXTRAS = {"run": [], "test": ["test"], "check": ["test", "dev"]}


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_env(extras: list[str]) -> None:
    """Create the venv and install dsim (with `extras`) unless already done."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    stamp_path = VENV / ".dsim-installed.json"
    try:
        stamp = json.loads(stamp_path.read_text())
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
        [
            str(python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
            target,
        ],
        cwd=ROOT,
        check=True,
    )
    stamp_path.write_text(json.dumps({"pyproject": digest, "extras": wanted}))


def main() -> int:
    global VENV
    argv = sys.argv[1:]
    gso = argv[:1] == ["--gso"]
    if gso:
        argv = argv[1:]
        VENV = ROOT / ".venv-gso"
    if not argv or argv[0] not in EXTRAS:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: dev.py [--gso] {run,test,check} [ARGS...]", file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    ensure_env(EXTRAS[command])
    if gso:
        subprocess.run(["bash", str(ROOT / "scripts" / "build_spead2.sh"), str(VENV)], check=True)
        os.environ["DSIM_EXPECT_GSO"] = "1"
    if command == "run":
        argv = [str(python()), "-m", "dsim", *args]
    elif command == "check":
        # pre-commit's hooks are local: they run ruff and mypy from this venv.
        os.environ["PATH"] = f"{python().parent}{os.pathsep}{os.environ.get('PATH', '')}"
        argv = [str(python()), "-m", "pre_commit", "run", "--all-files", *args]
    else:
        argv = [str(python()), "-m", "pytest", *args]
    os.chdir(ROOT)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
