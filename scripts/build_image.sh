#!/usr/bin/env bash
# Build dsim's container image (deploy/Containerfile) from a plain Debian machine.
#
#   scripts/build_image.sh [--engine podman|docker] [--rebuild-base] [--no-cache] [--setup-only]
#
# --setup-only installs and configures the engine (below), prints engine= and
# containers_conf= and stops; --rebuild-base makes the base image anew; --no-cache
# rebuilds every layer.
#
# Tags localhost/dsim:VERSION (VERSION from pyproject.toml) and localhost/dsim:latest.
# Safe to run again: what is installed, the base image and the build's layers are reused.
#
# With podman (the default unless `docker info` reaches an engine) it
#  - installs podman, buildah, runc and debootstrap from Debian's packages when missing
#    (apt-get, as root or through sudo);
#  - writes a containers.conf (OCI runtime runc, container ulimits no higher than this
#    host's hard limits) and uses it through CONTAINERS_CONF, unless CONTAINERS_CONF is
#    already set; the test and `podman run` need the same file (printed at the end);
#  - uses a local debian:bookworm-slim if there is one, else pulls it, else (no registry
#    reachable) makes one: `debootstrap --variant=minbase bookworm`, trimmed like the slim
#    image, imported as localhost/debian:bookworm-slim and kept for the next build.
# When pip on this host trusts an extra CA (a TLS-intercepting proxy), that bundle is
# handed to the build as the secret `ca` (never stored in the image). Override with
# DSIM_BUILD_CA=FILE, or DSIM_BUILD_CA=none for no secret. Other settings from the
# environment: DSIM_BASE_IMAGE (base image to use as is), DSIM_SPEAD2_VERSION,
# DSIM_DEBIAN_MIRROR (for debootstrap), DSIM_IMAGE_DIR (where containers.conf lives).
#
# Prints progress on stderr and, last, key=value lines on stdout: image, engine,
# containers_conf, build_seconds, size_bytes.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
say() { echo "build_image.sh: $*" >&2; }
die() { echo "build_image.sh: error: $*" >&2; exit 1; }

engine=""
rebuild_base=0
setup_only=0
no_cache=()
while [ $# -gt 0 ]; do
    case "$1" in
        --engine) [ $# -ge 2 ] || die "--engine needs podman or docker"; engine="$2"; shift 2 ;;
        --rebuild-base) rebuild_base=1; shift ;;
        --no-cache) no_cache=(--no-cache); shift ;;
        --setup-only) setup_only=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build_image.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

apt_install() {
    "$(dirname "$0")/apt_install.sh" "$@" || die "could not install $*"
}

# ------------------------------------------------------------------ engine
if [ -z "$engine" ]; then
    if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
        engine=docker
    else
        engine=podman
    fi
fi
case "$engine" in
    podman) apt_install podman buildah runc uidmap containernetworking-plugins iptables ;;
    docker) timeout 10 docker info >/dev/null 2>&1 || die "docker cannot reach an engine (use --engine podman)" ;;
    *) echo "build_image.sh: error: --engine must be podman or docker, not $engine" >&2; exit 2 ;;
esac

conf=""
if [ "$engine" = podman ]; then
    if [ -n "${CONTAINERS_CONF:-}" ]; then
        conf="$CONTAINERS_CONF"
        [ -r "$conf" ] || die "CONTAINERS_CONF=$conf is not a readable file"
        say "using CONTAINERS_CONF=$conf as it is"
    else
        dir="${DSIM_IMAGE_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/dsim-image}"
        mkdir -p "$dir"
        conf="$dir/containers.conf"
        # Containers get ulimits no higher than this host's hard limits (podman's default
        # nofile of 1048576 fails under a lower hard limit); crun refuses the cgroup
        # layout of these machines, runc does not.
        nofile="$(ulimit -Hn)"; [ "$nofile" = unlimited ] && nofile=1048576
        nproc="$(ulimit -Hu)"; { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
        cat >"$conf.tmp" <<EOF
# Written by dsim's scripts/build_image.sh; use with CONTAINERS_CONF=$conf
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
EOF
        mv "$conf.tmp" "$conf"
        export CONTAINERS_CONF="$conf"
    fi
    podman info >/dev/null 2>&1 || die "podman does not work here: $(podman info 2>&1 | tail -1)"
fi
if [ "$setup_only" -eq 1 ]; then
    echo "engine=$engine"
    echo "containers_conf=$conf"
    exit 0
fi
run_engine() { "$engine" "$@"; }
have_image() { run_engine image inspect "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------------ base image
local_base=localhost/debian:bookworm-slim
if [ -n "${DSIM_BASE_IMAGE:-}" ]; then
    base="$DSIM_BASE_IMAGE"
elif [ "$rebuild_base" -eq 0 ] && have_image docker.io/library/debian:bookworm-slim; then
    base=docker.io/library/debian:bookworm-slim
elif [ "$rebuild_base" -eq 0 ] && have_image "$local_base"; then
    base="$local_base"
elif [ "$rebuild_base" -eq 0 ] && timeout 60 "$engine" pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
    base=docker.io/library/debian:bookworm-slim
else
    apt_install debootstrap debian-archive-keyring
    say "no registry reachable: making $local_base with debootstrap (about 30 s)"
    work="$(mktemp -d "${TMPDIR:-/var/tmp}/dsim-base.XXXXXX")"
    trap '"${sudo[@]}" rm -rf "$work"' EXIT
    mirror="${DSIM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    "${sudo[@]}" debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/log" 2>&1 \
        || die "debootstrap failed: $(tail -1 "$work/log")"
    # Trim it like debian:bookworm-slim: no documentation, manuals or locales now or later.
    "${sudo[@]}" sh -s "$work/rootfs" "$mirror" <<'EOF' || die "trimming the base image failed"
set -eu
r="$1"
cat >"$r/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
cat >"$r/etc/apt/sources.list" <<LIST
deb $2 bookworm main
deb $2 bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
LIST
find "$r/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$r/usr/share/man"/* "$r/usr/share/info"/* "$r/usr/share/lintian"
find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$r/var/lib/apt/lists"/* "$r/var/cache/apt"/*.bin "$r/var/cache/apt/archives"/*.deb "$r/var/log"/*
EOF
    "${sudo[@]}" tar --numeric-owner -C "$work/rootfs" -c . \
        | run_engine import --change 'CMD ["bash"]' - "$local_base" >/dev/null \
        || die "importing the base image failed"
    base="$local_base"
    say "made $local_base"
fi
say "base image $base"

# ------------------------------------------------------------------ CA secret
ca="${DSIM_BUILD_CA:-}"
if [ -z "$ca" ]; then
    for candidate in "${PIP_CERT:-}" "$(pip3 config get global.cert 2>/dev/null || true)" \
                     "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
        if [ -n "$candidate" ] && [ -s "$candidate" ]; then ca="$candidate"; break; fi
    done
    # A CA added locally (update-ca-certificates) usually means TLS interception.
    if [ -z "$ca" ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        ca=/etc/ssl/certs/ca-certificates.crt
    fi
fi
secret=()
case "$ca" in
    ""|none) ;;
    *) [ -s "$ca" ] || die "CA bundle $ca is missing or empty"
       secret=(--secret "id=ca,src=$ca"); say "pip in the build trusts $ca (build secret ca)" ;;
esac

# ------------------------------------------------------------------ build
version="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$root/pyproject.toml")" || die "cannot read the version from pyproject.toml"
image="localhost/dsim:$version"
args=(--build-arg "BASE=$base" -f "$root/deploy/Containerfile" -t "$image" -t localhost/dsim:latest)
[ -n "${DSIM_SPEAD2_VERSION:-}" ] && args+=(--build-arg "SPEAD2_VERSION=$DSIM_SPEAD2_VERSION")
if [ "$engine" = podman ]; then
    # Docker-format metadata keeps the HEALTHCHECK (OCI images have none). Podman 4 finds
    # the ignore file next to the Containerfile by itself; naming it helps older ones.
    args+=(--format docker --layers --pull=never --ignorefile "$root/deploy/Containerfile.dockerignore")
fi

say "building $image with $engine (the first build compiles spead2: a few minutes)"
start="$(date +%s.%N)"
DOCKER_BUILDKIT=1 run_engine build "${args[@]}" "${secret[@]}" "${no_cache[@]}" "$root" >&2 \
    || die "$engine build failed (see above)"
end="$(date +%s.%N)"
seconds="$(python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$start" "$end")"
size="$(run_engine image inspect --format '{{.Size}}' "$image")"
say "built $image (and localhost/dsim:latest) in $seconds s, $((size / 1000000)) MB"
[ -n "$conf" ] && say "run it with: CONTAINERS_CONF=$conf podman run --rm --network host $image --help"

echo "image=$image"
echo "engine=$engine"
echo "containers_conf=$conf"
echo "build_seconds=$seconds"
echo "size_bytes=$size"
