# One command to start geomesh, one to test it. Both set up .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint bench bench-jobs bench-reproject bench-wms bench-staging bench-memory bench-load install clean

$(BIN)/geomesh: pyproject.toml setup.py $(wildcard protos/geomesh/v1/*.proto)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/geomesh

# For tests/deploy/test_kubernetes.py: kubectl with kustomize, pinned (deploy/kubernetes/install-kubectl.sh).
$(BIN)/kubectl: | $(BIN)/geomesh
	deploy/kubernetes/install-kubectl.sh $(VENV)

up: install  ## every service on localhost with the demo catalog; edge on http://127.0.0.1:3000
	$(BIN)/geomesh up

test: install $(BIN)/kubectl lint
	$(BIN)/pytest

lint: install  ## ruff and mypy, as CI runs them
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/bbox_crop.py

bench-jobs: install  ## a 177-granule async job vs a multiprocess rasterio loop
	$(BIN)/python benchmarks/job_throughput.py

MAPSERVER_PACKAGES := cgi-mapserver mapserver-bin lighttpd

bench-memory: install  ## peak memory of every service for the largest request allowed, alone and four at once
	$(BIN)/python benchmarks/memory.py

bench-load: install  ## a cheap crop's latency while 64 clients send whole-granule warps; what the excess gets
	$(BIN)/python benchmarks/load.py

bench-staging: install  ## staging an output in a local folder vs S3 (SeaweedFS), geomesh's writer vs boto3's upload
	$(BIN)/python benchmarks/staging.py

bench-reproject: install  ## reprojection to EPSG:6933 (bbox and whole granule) vs rasterio in-process
	$(BIN)/python benchmarks/reproject.py

bench-wms: install  ## WMS GetMap through the mesh vs MapServer 8 (FastCGI behind lighttpd)
	@if ! command -v mapserv >/dev/null || ! PATH="$$PATH:/usr/sbin:/sbin" command -v lighttpd >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(MAPSERVER_PACKAGES) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(MAPSERVER_PACKAGES); \
	  else \
	    echo "mapserv or lighttpd missing: as root, apt-get install -y $(MAPSERVER_PACKAGES)"; \
	  fi; \
	fi
	$(BIN)/python benchmarks/wms_getmap.py

.PHONY: image e2e-docker

image: install  ## the one image for every service, built without a registry (deploy/docker/build-offline.sh; root)
	deploy/docker/build-offline.sh

e2e-docker: install image  ## opt-in: the mesh as containers of that image, the seed's requests against it (deploy/docker/e2e.sh)
	deploy/docker/e2e.sh

clean:
	rm -rf $(VENV) .data build *.egg-info geomesh/v1/*_pb2*.py geomesh/v1/*_pb2*.pyi
