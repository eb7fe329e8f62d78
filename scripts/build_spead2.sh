#!/usr/bin/env bash
# Build spead2 from source, with UDP segmentation offload (GSO), into a virtualenv.
#
#   scripts/build_spead2.sh [VENV]      # default: .venv
#
# The spead2 wheels on PyPI are built without GSO; a build on this machine uses it
# and sends 2x to 4.5x faster (see README, "Performance"). It needs a C++ compiler
# and Debian's Boost, libdivide, ibverbs, rdmacm and pcap headers, which it installs with
# apt-get when missing (as root, or through sudo). The build takes about two
# minutes; pip caches the wheel it builds, so running the script again is quick.
# It builds the spead2 version already in the venv (or the newest if none), and
# checks afterwards that the installed spead2 really sends with GSO.
set -euo pipefail

venv="${1:-.venv}"
python="$venv/bin/python"
if [ ! -x "$python" ]; then
    echo "build_spead2.sh: no virtualenv at $venv; create it with dsim first (python3 scripts/dev.py test)" >&2
    exit 2
fi

# dsim's own check (dsim.transport.spead2_uses_gso): the socket option spead2 sets.
gso_check='
import sys
from dsim.transport import spead2_uses_gso
sys.exit(0 if spead2_uses_gso() else 1)
'
if "$python" -c "$gso_check" 2>/dev/null; then
    echo "build_spead2.sh: spead2 in $venv already sends with GSO"
    exit 0
fi

"$(dirname "$0")/apt_install.sh" spead2-build

version="$("$python" -c 'import importlib.metadata as m; print(m.version("spead2"))' 2>/dev/null || true)"
spec="spead2${version:+==$version}"
echo "build_spead2.sh: building $spec from source into $venv (about two minutes)"
"$python" -m pip install --quiet --disable-pip-version-check --no-binary spead2 \
    --force-reinstall --no-deps "$spec"

if "$python" -c "$gso_check"; then
    echo "build_spead2.sh: spead2 $("$python" -c 'import spead2; print(spead2.__version__)') in $venv sends with GSO"
else
    echo "build_spead2.sh: the new spead2 build does not use GSO (kernel or headers too old?)" >&2
    exit 1
fi
