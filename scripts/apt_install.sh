#!/usr/bin/env bash
# Install the Debian packages that are missing (as root, or through sudo); silent if none.
#
#   scripts/apt_install.sh PACKAGE...
#
# The word `spead2-build` stands for what compiling spead2 from source needs: a C++
# compiler and Debian's Boost (Meson finds Boost's headers only next to a Boost
# library, hence program-options), libdivide, ibverbs, rdmacm and pcap headers.
set -euo pipefail

spead2_build=(g++ pkg-config libboost-dev libboost-program-options-dev libdivide-dev
              libibverbs-dev librdmacm-dev libpcap-dev)
packages=()
for p in "$@"; do
    if [ "$p" = spead2-build ]; then packages+=("${spead2_build[@]}"); else packages+=("$p"); fi
done
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "apt_install.sh: missing ${missing[*]} and no apt-get to install them" >&2
    exit 1
fi
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "apt_install.sh: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
