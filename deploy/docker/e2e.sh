#!/usr/bin/env bash
# The mesh as containers of geomesh's image, and the seed's requests against its edge (make e2e-docker;
# opt-in, not part of make test). Build the image first (make image).
#
#   deploy/docker/e2e.sh [--keep]       (--keep: leave the containers and volumes, to look at them)
#
# 1. Volumes: the demo data (`geomesh demo`), the mesh's identity (`geomesh certs`, the CA's key then
#    removed, mounted read-only into every service as GEOMESH_MESH_TLS_DIR) and the job store.
# 2. Six containers of the one image, on the host's network (a dockerd started with --bridge=none has
#    no other), each on 127.0.0.1 and a free port of its own: the catalog, a transformer per family,
#    the scheduler and the edge, with read-only root file systems, no capabilities and no new
#    privileges, as a cluster would run them; waited on until docker says each is healthy (the image's
#    HEALTHCHECK, checked every second here).
# 3. deploy/docker/e2e_requests.py against the edge: the README's seed requests, a job polled to
#    success and its outputs downloaded, WMS, every output opened with rasterio.
# Containers and volumes are removed on exit, whatever happens (unless --keep).
#
#   GEOMESH_IMAGE        the image (default geomesh:latest)
#   PYTHON               runs the requests (default .venv/bin/python: needs requests and rasterio)
#   GEOMESH_E2E_TIMEOUT  seconds each container may take to become healthy (default 120)
# and lib.sh's DOCKER, DOCKER_HOST and GEOMESH_DOCKER_WORK.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$ROOT/deploy/docker/lib.sh"

IMAGE="${GEOMESH_IMAGE:-geomesh:latest}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
TIMEOUT="${GEOMESH_E2E_TIMEOUT:-120}"
KEEP=0
case "${1:-}" in
  --keep) KEEP=1 ;;
  -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
  "") ;;
  *) die "unknown option $1" ;;
esac

RUN="geomesh-e2e-$$"  # names and labels everything this run makes
OUT="$(mktemp -d "${TMPDIR:-/tmp}/geomesh-e2e.XXXXXX")"
CERTS=/var/lib/geomesh/certs
DATA=/var/lib/geomesh/data

cleanup() {
  local status=$?
  if [ -n "${DOCKER:-}" ]; then
    if [ "$status" != 0 ]; then
      for container in $("$DOCKER" ps -aq --filter "label=geomesh-e2e=$RUN" 2>/dev/null); do
        log "last lines of $("$DOCKER" inspect --format '{{.Name}}' "$container"):"
        "$DOCKER" logs --tail 10 "$container" 2>&1 | sed 's/^/    /' >&2 || true
      done
    fi
    if [ "$KEEP" = 1 ]; then
      log "kept the containers and volumes labelled geomesh-e2e=$RUN"
    else
      containers="$("$DOCKER" ps -aq --filter "label=geomesh-e2e=$RUN" 2>/dev/null || true)"
      # shellcheck disable=SC2086  # one id a word
      [ -z "$containers" ] || "$DOCKER" rm -f $containers >/dev/null 2>&1 || true
      volumes="$("$DOCKER" volume ls -q --filter "label=geomesh-e2e=$RUN" 2>/dev/null || true)"
      # shellcheck disable=SC2086
      [ -z "$volumes" ] || "$DOCKER" volume rm -f $volumes >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$OUT"
  stop_dockerd
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_docker
"$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE: build it first (make image)"
[ -x "$PYTHON" ] || die "no $PYTHON: make install first, or set PYTHON"

# -- 1. volumes ------------------------------------------------------------------------------------
for volume in data certs jobs; do
  "$DOCKER" volume create --label "geomesh-e2e=$RUN" "$RUN-$volume" >/dev/null
done
tool() { "$DOCKER" run --rm --network none --label "geomesh-e2e=$RUN" --entrypoint "$1" "${@:2}"; }
log "geomesh demo and geomesh certs into volumes $RUN-data and $RUN-certs"
tool geomesh -v "$RUN-data:$DATA" "$IMAGE" demo --data-dir "$DATA" >/dev/null
tool sh -v "$RUN-certs:$CERTS" "$IMAGE" -c "geomesh certs $CERTS >/dev/null && rm $CERTS/ca.key"

# -- 2. the mesh -----------------------------------------------------------------------------------
read -r EDGE SCHEDULER CATALOG GDAL NETCDF SWATH < <("$PYTHON" - <<'EOF'
import socket
sockets = [socket.socket() for _ in range(6)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
)
loopback=127.0.0.1

# serve NAME SERVICE [docker run options...]: one service of the mesh, detached.
serve() {
  local name="$1" service="$2"
  shift 2
  "$DOCKER" run --detach --name "$RUN-$name" --label "geomesh-e2e=$RUN" --network host \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    --health-interval 1s --health-timeout 5s --health-retries 3 --health-start-period 120s \
    -v "$RUN-certs:$CERTS:ro" -e "GEOMESH_MESH_TLS_DIR=$CERTS" "$@" "$IMAGE" "$service" >/dev/null
}
granules=(-v "$RUN-data:$DATA:ro")
scratch=(--tmpfs "/var/lib/geomesh/scratch:uid=10001,gid=10001,mode=0700")

log "starting the mesh on $loopback: edge $EDGE, scheduler $SCHEDULER, catalog $CATALOG, transformers $GDAL $NETCDF $SWATH"
serve catalog catalog "${granules[@]}" -e GEOMESH_CATALOG_HOST=$loopback -e "GEOMESH_CATALOG_PORT=$CATALOG" \
  -e "GEOMESH_GDAL_ADDRESSES=$loopback:$GDAL" -e "GEOMESH_NETCDF_ADDRESSES=$loopback:$NETCDF" \
  -e "GEOMESH_SWATH_ADDRESSES=$loopback:$SWATH"
for family in gdal netcdf swath; do
  port_of_family="${family^^}"
  serve "transformer-$family" transformer "${granules[@]}" "${scratch[@]}" -e "GEOMESH_TRANSFORMER_FAMILY=$family" \
    -e GEOMESH_TRANSFORMER_HOST=$loopback -e "GEOMESH_TRANSFORMER_PORT=${!port_of_family}" \
    -e "GEOMESH_TRANSFORMER_ALLOWED_URLS=file://$DATA/granules/"
done
serve scheduler scheduler -v "$RUN-jobs:/var/lib/geomesh/jobs" -e GEOMESH_SCHEDULER_HOST=$loopback \
  -e "GEOMESH_SCHEDULER_PORT=$SCHEDULER" -e "GEOMESH_SCHEDULER_CATALOG_ADDRESS=$loopback:$CATALOG"
serve edge edge -e GEOMESH_EDGE_HOST=$loopback -e "GEOMESH_EDGE_PORT=$EDGE" \
  -e "GEOMESH_EDGE_SCHEDULER_ADDRESS=$loopback:$SCHEDULER" -e "GEOMESH_EDGE_CATALOG_ADDRESS=$loopback:$CATALOG"

# Each container until docker's health check says healthy; one that exits or turns unhealthy fails the run.
started="$(date +%s)"
for name in catalog transformer-gdal transformer-netcdf transformer-swath scheduler edge; do
  while :; do
    state="$("$DOCKER" inspect --format '{{.State.Status}} {{.State.Health.Status}}' "$RUN-$name")"
    case "$state" in
      "running healthy") break ;;
      "running starting") ;;
      *) die "$RUN-$name is $state" ;;
    esac
    [ $(($(date +%s) - started)) -lt "$TIMEOUT" ] || die "$RUN-$name not healthy within $TIMEOUT s ($state)"
    sleep 0.5
  done
  said="$("$DOCKER" inspect --format '{{range .State.Health.Log}}{{.Output}}{{end}}' "$RUN-$name" | grep . | tail -n 1)"
  log "$RUN-$name healthy after $(($(date +%s) - started)) s: $said"
done

# -- 3. the seed's requests ------------------------------------------------------------------------
log "the seed's requests against http://$loopback:$EDGE"
"$PYTHON" "$ROOT/deploy/docker/e2e_requests.py" "http://$loopback:$EDGE" "$OUT"
log "e2e passed: the mesh ran as $("$DOCKER" ps -q --filter "label=geomesh-e2e=$RUN" | wc -l) containers of $IMAGE"
