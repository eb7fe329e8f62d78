#!/usr/bin/env bash
# Build spead2's C++ tutorial sender ("batched heaps"), the reference for dsim's send
# throughput, from the source of the spead2 version installed in a virtualenv, with GSO.
#
#   scripts/build_cxx_sender.sh [VENV]      # default: .venv
#
# Downloads that version's source distribution from PyPI, unpacks it under
# .cache/cxx-sender/ (git-ignored), installs the Debian packages it needs when missing
# (as root, or through sudo) and meson, ninja and spead2's code generators into a
# build venv there, builds spead2's C++ library and the tutorial program
# tut_11_send_batch_heaps with GSO required (-Dgso=enabled), and checks that the binary
# really sets UDP_SEGMENT on its socket (strace). The binary ends up at
#
#   .cache/cxx-sender/spead2-VERSION/tut_11_send_batch_heaps
#   .cache/cxx-sender/tut_11_send_batch_heaps -> the last one built
#
# where scripts/bench_send.py finds it (sender "cxx"); BUILD-INFO beside it records
# the version and the GSO check. A second run for the same version only re-checks.
# Nothing of spead2's source is kept in the repository: it is fetched at build time.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-.venv}"
python="$venv/bin/python"
program=tut_11_send_batch_heaps
say() { echo "build_cxx_sender.sh: $*"; }

if [ ! -x "$python" ]; then
    say "no virtualenv at $venv; create it first (python3 scripts/dev.py test)" >&2
    exit 2
fi
version="$("$python" -c 'import importlib.metadata as m; print(m.version("spead2"))')"
cache="$root/.cache/cxx-sender"
out="$cache/spead2-$version"
binary="$out/$program"

# --- the GSO check: does the program set UDP_SEGMENT on its socket when it sends?
gso_check() {
    # Send 64 heaps of 64 KiB in 9000-byte packets to an unread socket on 127.0.0.1
    # under strace, and look for a successful setsockopt(..., UDP_SEGMENT, ...).
    local log="$out/gso-check.strace"
    "$python" - "$binary" "$log" <<'EOF'
import socket, subprocess, sys
binary, log = sys.argv[1], sys.argv[2]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    subprocess.run(
        ["strace", "-f", "-e", "trace=setsockopt", "-o", log,
         binary, "-n", "64", "-p", "9000", "-H", "65536", "127.0.0.1", str(port)],
        check=True, stdout=subprocess.DEVNULL, timeout=60,
    )
EOF
    grep -E 'UDP_SEGMENT|SOL_UDP, 103' "$log" | grep -qE '= 0$'
}

if [ -x "$binary" ] && [ -f "$out/BUILD-INFO" ] && command -v strace >/dev/null && gso_check; then
    ln -sfn "spead2-$version/$program" "$cache/$program"
    say "spead2 $version C++ sender already built, sends with GSO: $binary"
    exit 0
fi

# --- Debian packages: compiler, spead2's dependencies, strace for the check
"$(dirname "$0")/apt_install.sh" spead2-build strace

# --- build tools: meson, ninja and what spead2's meson.build runs (jinja2, pycparser,
# packaging), in a venv of their own so that the project's venv stays as it is
tools="$cache/buildenv"
if [ ! -x "$tools/bin/meson" ] || [ ! -x "$tools/bin/ninja" ]; then
    say "creating the build tools venv $tools"
    "$python" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check \
        meson ninja jinja2 pycparser packaging
fi

# --- spead2's source distribution, the version under test
src="$cache/src/spead2-$version"
if [ ! -f "$src/meson.build" ]; then
    dist="$cache/dist"
    mkdir -p "$dist" "$cache/src"
    say "downloading the spead2 $version source distribution"
    # --no-binary only for spead2: its build dependencies come as wheels. pip prepares the
    # metadata of an sdist by building it (meson-python has no lighter hook): once.
    "$python" -m pip download --quiet --disable-pip-version-check --no-binary spead2 --no-deps \
        --dest "$dist" "spead2==$version"
    archive="$(ls "$dist"/spead2-"$version".tar.gz)"
    rm -rf "$src"
    tar -xzf "$archive" -C "$cache/src"
fi
if [ ! -f "$src/examples/tutorial/$program.cpp" ]; then
    say "$src has no examples/tutorial/$program.cpp" >&2
    exit 1
fi

# --- configure and build: GSO required, no command-line tools, tests or CUDA
build="$cache/build/spead2-$version"
if [ ! -f "$build/build.ninja" ]; then
    say "configuring spead2 $version (meson)"
    PATH="$tools/bin:$PATH" "$tools/bin/meson" setup "$build" "$src" \
        --buildtype=release -Dgso=enabled -Dtools=disabled -Dunit_test=disabled \
        -Dcuda=disabled -Dgdrapi=disabled >"$cache/meson-setup-$version.log" || {
        tail -30 "$cache/meson-setup-$version.log" >&2
        exit 1
    }
fi
if ! grep -q '^#define SPEAD2_USE_GSO 1' "$build/include/spead2/common_features.h"; then
    say "meson did not enable GSO (SPEAD2_USE_GSO is not 1)" >&2
    exit 1
fi
say "building the C++ library and $program (a few minutes the first time)"
PATH="$tools/bin:$PATH" "$tools/bin/meson" compile -C "$build" "$program" \
    >"$cache/meson-compile-$version.log" || {
    tail -30 "$cache/meson-compile-$version.log" >&2
    exit 1
}
mkdir -p "$out"
install -m 755 "$build/examples/tutorial/$program" "$binary"

if ! gso_check; then
    say "$binary does not set UDP_SEGMENT when it sends (see $out/gso-check.strace)" >&2
    exit 1
fi
{
    echo "spead2 $version"
    echo "source: PyPI sdist spead2-$version.tar.gz, examples/tutorial/$program.cpp"
    echo "meson: -Dgso=enabled (SPEAD2_USE_GSO 1), buildtype release"
    echo "gso check: $(grep -m1 -E 'UDP_SEGMENT|SOL_UDP, 103' "$out/gso-check.strace")"
} >"$out/BUILD-INFO"
ln -sfn "spead2-$version/$program" "$cache/$program"
say "built $binary (spead2 $version); it sends with GSO:"
say "  $(grep -m1 -E 'UDP_SEGMENT|SOL_UDP, 103' "$out/gso-check.strace")"
