# shellcheck shell=bash
# Shared by build-offline.sh and e2e.sh (sourced): a docker daemon to talk to, and a client that
# builds with BuildKit.
#
#   GEOMESH_DOCKER_WORK  work folder (default /var/tmp/geomesh-docker): caches, and the data root,
#                        socket, pid file and log of a dockerd started here
#   DOCKER               the docker client to use (default: the first of `docker`, /usr/bin/docker
#                        that can build with BuildKit)
#   DOCKER_HOST          a daemon of your own; unset: the default one, else one started here

WORK="${GEOMESH_DOCKER_WORK:-/var/tmp/geomesh-docker}"
STARTED_DOCKERD=""

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs Debian packages (root only), once the package lists are fresh.
apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then die "$* not installed (Debian: apt-get install $*)"; fi
  log "installing $* with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# A client that builds with BuildKit and a daemon to talk to (installing Debian's docker.io when
# neither a daemon answers nor dockerd is here, or no client can build): sets DOCKER and DOCKER_HOST.
ensure_docker() {
  PATH="$PATH:/usr/sbin:/sbin"
  if ! pick_docker || { ! "$DOCKER" info >/dev/null 2>&1 && ! command -v dockerd >/dev/null; }; then
    apt_install docker.io
  fi
  pick_docker || die "no docker client here builds with BuildKit: install the buildx plugin (docker-ce's docker-buildx-plugin), or Debian's docker.io"
  ensure_dockerd
}

# A daemon: the one DOCKER_HOST (or the default socket) names if it answers, the one a previous run
# left under WORK if it answers, else a dockerd started here (root only) and stopped by stop_dockerd.
ensure_dockerd() {
  local client="${DOCKER:-docker}"
  if "$client" info >/dev/null 2>&1; then
    return 0
  fi
  if [ -z "${DOCKER_HOST:-}" ] && [ -S "$WORK/docker.sock" ] && DOCKER_HOST="unix://$WORK/docker.sock" "$client" info >/dev/null 2>&1; then
    export DOCKER_HOST="unix://$WORK/docker.sock"
    log "using the dockerd at $DOCKER_HOST"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "no docker daemon answers ($client info) and only root can start one"
  command -v dockerd >/dev/null || die "no docker daemon answers and dockerd is not installed (Debian: apt-get install docker.io)"
  mkdir -p "$WORK/docker" "$WORK/exec"
  log "starting dockerd (data root $WORK/docker, socket $WORK/docker.sock, log $WORK/dockerd.log)"
  # No bridge and no iptables: containers use the host's network (--network=host) or none.
  dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --data-root "$WORK/docker" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    --host "unix://$WORK/docker.sock" >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  export DOCKER_HOST="unix://$WORK/docker.sock"
  local waited=0
  until "$client" info >/dev/null 2>&1; do
    if ! kill -0 "$STARTED_DOCKERD" 2>/dev/null; then
      tail -n 20 "$WORK/dockerd.log" >&2
      STARTED_DOCKERD=""
      die "dockerd exited during start-up (log above)"
    fi
    waited=$((waited + 1))
    [ "$waited" -le 60 ] || die "dockerd did not answer within 30 s (see $WORK/dockerd.log)"
    sleep 0.5
  done
}

# Stops the dockerd this run started (if any): SIGTERM, then waits for it (its containerd with it).
stop_dockerd() {
  if [ -n "$STARTED_DOCKERD" ] && kill -0 "$STARTED_DOCKERD" 2>/dev/null; then
    log "stopping the dockerd started here (pid $STARTED_DOCKERD)"
    kill -TERM "$STARTED_DOCKERD" 2>/dev/null || true
    local waited=0
    while kill -0 "$STARTED_DOCKERD" 2>/dev/null && [ "$waited" -lt 60 ]; do
      sleep 0.5
      waited=$((waited + 1))
    done
    kill -0 "$STARTED_DOCKERD" 2>/dev/null && kill -KILL "$STARTED_DOCKERD" 2>/dev/null
    # What it leaves mounted (the host network's namespace, once a container used it).
    findmnt -rn -o TARGET 2>/dev/null | { grep -F "$WORK/exec/" || true; } | sort -r | while read -r mounted; do
      umount "$mounted" 2>/dev/null || true
    done
  fi
  STARTED_DOCKERD=""
}

# Sets DOCKER to a client that builds with BuildKit: one with the buildx plugin (Docker 23+ builds
# with it by default), or an older one (before 23) whose own BuildKit client DOCKER_BUILDKIT=1 turns
# on; fails when there is none.
pick_docker() {
  local candidate version
  for candidate in ${DOCKER:-} docker /usr/bin/docker; do
    command -v "$candidate" >/dev/null || continue
    if "$candidate" buildx version >/dev/null 2>&1; then
      DOCKER="$candidate"
      return 0
    fi
    version="$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null || true)"
    if [ -n "$version" ] && [ "${version%%.*}" -lt 23 ] 2>/dev/null; then
      DOCKER="$candidate"
      return 0
    fi
  done
  return 1
}
