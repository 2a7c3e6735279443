#!/usr/bin/env bash
# Builds geomesh's image (deploy/docker/Dockerfile) on a machine that reaches no container registry:
# only Debian's mirror (for debootstrap) and PyPI (for the wheels), and neither once the caches hold
# what they need.
#
#   deploy/docker/build-offline.sh [options]        (as root: debootstrap, and dockerd if none runs)
#   make image                                      (the same, default options)
#
# 1. A Debian bookworm root file system, made with debootstrap (variant minbase, plus python3.11,
#    python3-venv, ca-certificates, netbase; the wheels bring every other library, manylinux style,
#    which the Dockerfile checks with ldd), brought up to date from bookworm-updates and
#    bookworm-security, trimmed, cached as a tarball, and `docker import`ed as the base image
#    (geomesh-base:bookworm). --refresh makes it again (e.g. for newer security updates).
# 2. The wheelhouse (deploy/docker/wheelhouse/, in the build context): every pinned dependency and
#    build requirement of pyproject.toml as manylinux wheels for CPython 3.11 on this architecture,
#    downloaded by the host's pip (any Python 3.11+), or found complete already without any network.
# 3. `docker build --network=none --build-arg BASE=geomesh-base:bookworm`: the builder stage makes
#    the geomesh wheel from the wheelhouse, the runtime stage installs with --no-index from it (the
#    dependencies in a layer of their own, so a code change rebuilds only geomesh's).
#
# Options (and the environment variables they override):
#   --tag IMAGE         the image's name (GEOMESH_IMAGE, default geomesh:latest; also tagged
#                       geomesh:<version> from pyproject.toml)
#   --base IMAGE        an existing base image instead of the debootstrap one (no debootstrap then;
#                       e.g. python:3.11-slim-bookworm where a registry is reachable)
#   --base-tag IMAGE    the name given to the imported debootstrap image (default geomesh-base:bookworm)
#   --mirror URL        Debian mirror for debootstrap (DEBIAN_MIRROR, default http://deb.debian.org/debian)
#   --security URL      Debian's security mirror (DEBIAN_SECURITY_MIRROR, default
#                       http://deb.debian.org/debian-security)
#   --work DIR          work folder (GEOMESH_DOCKER_WORK, default /var/tmp/geomesh-docker): the rootfs
#                       tarball cache, and the data root, socket and log of a dockerd started here
#   --python PATH       the host Python that runs pip (PYTHON, default .venv/bin/python, else python3)
#   --refresh           make the rootfs tarball and the wheelhouse again instead of reusing them
#   --save FILE         also write the image to FILE (docker save, gzip) for `docker load` elsewhere
#   --keep-dockerd      leave a dockerd started here running (e2e.sh then uses it rather than
#                       starting one of its own)
#   -h, --help          this text
#
# Docker: the daemon DOCKER_HOST (or the default socket) names, else one left running under the work
# folder, else (as root) a dockerd started here with --bridge=none --iptables=false, its own data
# root, exec root and socket under the work folder, stopped at the end (unless --keep-dockerd). The
# client must build with BuildKit (RUN --mount): one with the buildx plugin, or a client older than
# 23 with DOCKER_BUILDKIT=1 (Debian bookworm's docker.io); DOCKER names one. As root, with neither
# dockerd nor such a client here, Debian's docker.io is installed (apt-get).
#
# Idempotent: caches are reused (the rootfs tarball, the base image while it matches the tarball,
# the wheelhouse, docker's layer cache in its data root); a failed or interrupted run removes its
# partial root file system (unmounting what debootstrap mounted) and stops the dockerd it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$ROOT/deploy/docker/lib.sh"

TAG="${GEOMESH_IMAGE:-geomesh:latest}"
BASE=""
BASE_TAG="geomesh-base:bookworm"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
# A cache inside the build context (the Dockerfile copies it), ignored by git.
WHEELHOUSE="$ROOT/deploy/docker/wheelhouse"
PYTHON="${PYTHON:-}"
REFRESH=0
SAVE=""
KEEP_DOCKERD=0
SUITE=bookworm
PACKAGES=python3.11,python3.11-venv,python3-venv,ca-certificates,netbase

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --base-tag) BASE_TAG="$2"; shift 2 ;;
    --mirror) MIRROR="$2"; shift 2 ;;
    --security) SECURITY="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --refresh) REFRESH=1; shift ;;
    --save) SAVE="$2"; shift 2 ;;
    --keep-dockerd) KEEP_DOCKERD=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

ARCH="$(uname -m)"
case "$ARCH" in
  x86_64) DEB_ARCH=amd64 ;;
  aarch64) DEB_ARCH=arm64 ;;
  *) die "no manylinux wheels are fetched for $ARCH here" ;;
esac
TARBALL="$WORK/cache/rootfs-$SUITE-$DEB_ARCH.tar.gz"
PARTIAL="$WORK/rootfs.partial"

cleanup() {
  local status=$?
  if [ -d "$PARTIAL" ]; then
    # debootstrap mounts /proc and /sys inside the target; never remove through a mount.
    findmnt -rn -o TARGET 2>/dev/null | { grep -F "$PARTIAL" || true; } | sort -r | while read -r mounted; do
      umount -l "$mounted" 2>/dev/null || true
    done
    rm -rf --one-file-system "$PARTIAL"
  fi
  rm -f "$TARBALL.part" "$WORK/requirements.txt"
  if [ "$KEEP_DOCKERD" = 1 ] && [ -n "$STARTED_DOCKERD" ]; then
    log "leaving dockerd (pid $STARTED_DOCKERD) running at $DOCKER_HOST"
  else
    stop_dockerd
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

seconds() { date +%s; }
START="$(seconds)"
mkdir -p "$WORK/cache"

# -- 1. the base image -----------------------------------------------------------------------------
make_rootfs() {
  [ "$(id -u)" = 0 ] || die "debootstrap needs root (or pass --base IMAGE)"
  PATH="$PATH:/usr/sbin:/sbin"
  command -v debootstrap >/dev/null || apt_install debootstrap
  log "debootstrap $SUITE ($DEB_ARCH, minbase + $PACKAGES) from $MIRROR"
  rm -rf --one-file-system "$PARTIAL"
  debootstrap --variant=minbase --arch="$DEB_ARCH" --include="$PACKAGES" "$SUITE" "$PARTIAL" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  # debootstrap takes only the release itself: its point updates and security fixes come after.
  log "apt-get upgrade from $SUITE-updates and $SUITE-security"
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY" "$SUITE" >"$PARTIAL/etc/apt/sources.list"
  { chroot "$PARTIAL" apt-get update -q && chroot "$PARTIAL" env DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q; } \
    >>"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; die "apt-get upgrade failed (log: $WORK/debootstrap.log)"; }
  # What an image needs none of: package lists and caches, documentation, logs, the host's name and
  # resolver (docker provides its own), device nodes.
  rm -rf --one-file-system "$PARTIAL"/var/lib/apt/lists/* "$PARTIAL"/var/cache/apt/* "$PARTIAL"/var/cache/debconf/*-old \
    "$PARTIAL"/etc/resolv.conf "$PARTIAL"/etc/hostname \
    "$PARTIAL"/usr/share/doc/* "$PARTIAL"/usr/share/man/* "$PARTIAL"/usr/share/info/* "$PARTIAL"/var/log/* \
    "$PARTIAL"/tmp/* "$PARTIAL"/var/tmp/*
  find "$PARTIAL"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
  tar --numeric-owner --xattrs -C "$PARTIAL" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
    -czf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
  rm -rf --one-file-system "$PARTIAL"
  log "root file system cached: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
}

import_base() {
  local checksum current
  checksum="$(sha256sum "$TARBALL" | cut -d' ' -f1)"
  current="$("$DOCKER" image inspect --format '{{ index .Config.Labels "org.geomesh.rootfs.sha256" }}' "$BASE_TAG" 2>/dev/null || true)"
  if [ "$current" = "$checksum" ]; then
    log "base image $BASE_TAG is up to date"
    return 0
  fi
  log "docker import $TARBALL as $BASE_TAG"
  "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.geomesh.rootfs.sha256=$checksum" \
    --change 'CMD ["/bin/bash"]' \
    "$TARBALL" "$BASE_TAG" >/dev/null
}

# -- 2. the wheelhouse -----------------------------------------------------------------------------
fill_wheelhouse() {
  local platforms=() minor pip_options
  # Every manylinux tag bookworm's glibc (2.36) runs, newest first, as pip cannot derive them itself.
  for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_$ARCH"); done
  platforms+=(--platform "manylinux2014_$ARCH")
  pip_options=(--disable-pip-version-check --only-binary=:all: "${platforms[@]}" --python-version 3.11
    --implementation cp --abi cp311 --dest "$WHEELHOUSE" -r "$WORK/requirements.txt")
  "$PYTHON" "$ROOT/deploy/docker/requirements.py" "$ROOT/pyproject.toml" >"$WORK/requirements.txt"
  mkdir -p "$WHEELHOUSE"
  if [ "$REFRESH" = 1 ]; then
    find "$WHEELHOUSE" -name '*.whl' -delete
  fi
  if "$PYTHON" -m pip download --quiet --no-index --find-links "$WHEELHOUSE" "${pip_options[@]}" >/dev/null 2>&1; then
    log "wheelhouse complete already: $WHEELHOUSE ($(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
    return 0
  fi
  log "downloading the wheelhouse from PyPI into $WHEELHOUSE (log: $WORK/pip.log)"
  "$PYTHON" -m pip download --quiet "${pip_options[@]}" >"$WORK/pip.log" 2>&1 \
    || { tail -n 30 "$WORK/pip.log" >&2; die "pip download failed (log: $WORK/pip.log)"; }
  log "wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
}

# -- 3. the image ----------------------------------------------------------------------------------
build_image() {
  local version revision created started
  version="$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
  revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then revision="$revision-dirty"; fi
  created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  # The base is local and the wheelhouse in the context: nothing to fetch, whatever the base.
  log "docker build --network=none --build-arg BASE=$IMAGE_BASE -t $TAG (geomesh $version)"
  started="$(seconds)"
  DOCKER_BUILDKIT=1 "$DOCKER" build --network=none \
    --build-arg "BASE=$IMAGE_BASE" --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
    -f "$ROOT/deploy/docker/Dockerfile" -t "$TAG" -t "${TAG%%:*}:$version" "$ROOT"
  BUILD_SECONDS=$(($(seconds) - started))
  # The images this tag named before (untagged now; their layers are shared, their own are not).
  "$DOCKER" image prune --force --filter "label=org.opencontainers.image.title=geomesh" >/dev/null
}

ensure_docker
if [ -n "$BASE" ]; then
  IMAGE_BASE="$BASE"
else
  if [ "$REFRESH" = 1 ] || [ ! -s "$TARBALL" ]; then make_rootfs; else log "reusing $TARBALL"; fi
  import_base
  IMAGE_BASE="$BASE_TAG"
fi
fill_wheelhouse
build_image

SIZE="$("$DOCKER" image inspect --format '{{.Size}}' "$TAG")"
if [ -n "$SAVE" ]; then
  log "docker save $TAG | gzip > $SAVE"
  "$DOCKER" save "$TAG" | gzip -1 >"$SAVE.part" && mv "$SAVE.part" "$SAVE"
fi
log "built $TAG on $IMAGE_BASE: $((SIZE / 1024 / 1024)) MiB; docker build ${BUILD_SECONDS} s, all steps $(($(seconds) - START)) s"
