"""The Kubernetes manifests (deploy/kubernetes/): every overlay renders with kustomize, validates offline
against Kubernetes' own schemas (kubernetes-validate --strict, Kubernetes 1.31) and the CRDs' published
schemas (tests/deploy/crds/), and holds together where a cluster would only fail at run time: Services
and NetworkPolicies select pods that exist, on ports they have; probes reach real ports and the image's
healthcheck; every ConfigMap, Secret and key is rendered or operator-provided (operator-secrets.yml);
addresses and the registry's name headless Services on the ports the services listen on; every
GEOMESH_* variable is a real setting; autoscalers query metrics geomesh exports for the registry's
services; transformer sizing fits the pod. The last tests break a manifest and see the checks object.

kubectl (for `kubectl kustomize`) comes from PATH, or from .venv/bin (deploy/kubernetes/install-kubectl.sh).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import ValidationError

from geomesh import metrics
from geomesh.identity import CALLERS, MeshSettings
from geomesh.s3 import S3Settings, split_s3_url
from geomesh.settings import TRANSFORMER_FAMILIES as FAMILIES
from geomesh.settings import CatalogSettings, EdgeSettings, SchedulerSettings, TransformerSettings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "prod", "prod-hpa")
KUBERNETES_VERSION = "1.31.0"
CRDS = Path(__file__).parent / "crds"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
REGISTRY = ROOT / "catalog" / "services.yml"
ADAPTER_RULES = KUBERNETES / "components" / "hpa" / "prometheus-adapter-rules.yaml"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

SETTINGS = {"edge": EdgeSettings, "scheduler": SchedulerSettings, "catalog": CatalogSettings, "transformer": TransformerSettings}
COMPONENTS = {"edge", "scheduler", "catalog", *(f"transformer-{family}" for family in FAMILIES)}
METRICS_PORT = 9464
# `make bench-memory` (README, "Bounds measured"): the gdal transformer idle (PSS, its fork server and
# workers included) and its largest worker for the largest output allowed (a JPEG of 512 MiB in memory).
TRANSFORMER_IDLE = 259 * 2**20
LARGEST_WORKER = 2030 * 2**20
MEASURED_MAX_OUTPUT = 512 * 2**20

Doc = dict[str, Any]


# -- rendering ---------------------------------------------------------------------------------


def kubectl() -> str:
    """kubectl: GEOMESH_KUBECTL, the venv's (install-kubectl.sh), or PATH's; skip (fail on CI) without."""
    for candidate in (os.environ.get("GEOMESH_KUBECTL"), str(Path(sys.executable).parent / "kubectl"), shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    reason = "kubectl not found: deploy/kubernetes/install-kubectl.sh puts a pinned one in .venv/bin"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@cache
def _rendered(overlay: str) -> tuple[Doc, ...]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@dataclass
class Render:
    overlay: str
    docs: list[Doc]

    def kind(self, kind: str) -> list[Doc]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def named(self, kind: str, name: str) -> Doc | None:
        return next((doc for doc in self.kind(kind) if doc["metadata"]["name"] == name), None)

    @property
    def pods(self) -> list[Pod]:
        found = []
        for doc in self.docs:
            if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
                template = doc["spec"]["template"]
                found.append(Pod(f"{doc['kind']}/{doc['metadata']['name']}", doc, template["metadata"].get("labels", {}), template["spec"]))
        return found

    def data_keys(self, kind: str, name: str) -> set[str] | None:
        """The keys of a rendered ConfigMap or Secret; None if it is not rendered."""
        doc = self.named(kind, name)
        if doc is None:
            return None
        return {*doc.get("data", {}), *doc.get("binaryData", {}), *doc.get("stringData", {})}

    def env(self, container: Doc) -> dict[str, str]:
        """A container's environment as the kubelet makes it: envFrom ConfigMaps, then env (a value taken from
        a Secret reads as <secret name/key>)."""
        found: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                config = self.named("ConfigMap", source["configMapRef"]["name"])
                found.update((config or {}).get("data", {}))
        for variable in container.get("env", []):
            if "value" in variable:
                found[variable["name"]] = variable["value"]
            elif "secretKeyRef" in variable.get("valueFrom", {}):
                ref = variable["valueFrom"]["secretKeyRef"]
                found[variable["name"]] = f"<{ref['name']}/{ref['key']}>"
        return found


@dataclass
class Pod:
    owner: str
    doc: Doc
    labels: dict[str, str]
    spec: Doc

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    @property
    def geomesh(self) -> bool:
        return self.labels.get("app.kubernetes.io/name") == "geomesh"

    def containers(self, init: bool = True) -> list[Doc]:
        return [*(self.spec.get("initContainers", []) if init else []), *self.spec["containers"]]

    def ports(self) -> list[Doc]:
        return [port for container in self.containers(init=False) for port in container.get("ports", [])]


def render(overlay: str) -> Render:
    return Render(overlay, copy.deepcopy(list(_rendered(overlay))))


def served(container: Doc) -> str | None:
    """The service a container runs with the image's entrypoint (`geomesh serve SERVICE`), if any."""
    args = container.get("args", [])
    return args[0] if "command" not in container and args and args[0] in SETTINGS else None


# -- selectors and small parsers ---------------------------------------------------------------


def matches(selector: Doc | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions); an empty one selects everything."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def selected(render: Render, selector: Doc | None) -> list[Pod]:
    return [pod for pod in render.pods if matches(selector, pod.labels)]


_UNITS = {"": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}


def quantity(value: str | int | float) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def has_port(pod: Pod, port: str | int, container: Doc | None = None) -> bool:
    ports = container.get("ports", []) if container is not None else pod.ports()
    return any(p.get("name") == port or p["containerPort"] == port for p in ports)


def container_port(container: Doc, port: str | int) -> int | None:
    return next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == port or p["containerPort"] == port), None)


def mount_for(pod: Pod, container: Doc, path: str) -> tuple[Doc, Doc] | None:
    """The volumeMount (and its volume) under which `path` lies, the deepest one."""
    mounts = [m for m in container.get("volumeMounts", []) if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod.spec.get("volumes", []) if v["name"] == mount["name"])
    return mount, volume


@cache
def healthcheck_usage() -> tuple[frozenset[str], frozenset[str]]:
    """The options and services deploy/docker/healthcheck.py accepts, from its --help."""
    done = subprocess.run([sys.executable, str(HEALTHCHECK), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    services = re.search(r"\{([a-z,]+)\}", done.stdout)
    return frozenset(re.findall(r"--[a-z][a-z-]*", done.stdout)), frozenset(services.group(1).split(",") if services else ())


@cache
def exported_metrics() -> dict[str, tuple[str, ...]]:
    """Every series name geomesh/metrics.py exports, with its labels (counters' _total, histograms' _bucket ...)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "info": ("_info",)}
    found: dict[str, tuple[str, ...]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for suffix in suffixes.get(str(value._type), ("",)):
                found[value._name + suffix] = tuple(value._labelnames)
    return found


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def promql(query: str) -> tuple[set[str], dict[str, str]]:
    """The metric names a PromQL query reads, and its label matchers (label -> value; one per label)."""
    query = re.sub(r"<<[^>]*>>", "", query)  # prometheus-adapter's template fields
    matchers = dict(re.findall(r'([a-zA-Z_]\w*)\s*=~?\s*"([^"]*)"', " ".join(re.findall(r"\{([^}]*)\}", query))))
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", re.sub(r"\{[^}]*\}", " ", query))
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
        if match.group() not in _PROMQL_WORDS and not bare[match.end():].lstrip().startswith("("):
            names.add(match.group())
    return names, matchers


@cache
def family_services() -> dict[str, frozenset[str]]:
    """Each transformer family's registry services: those whose addresses read GEOMESH_<FAMILY>_ADDRESSES."""
    found: dict[str, set[str]] = {family: set() for family in FAMILIES}
    for service in yaml.safe_load(REGISTRY.read_text())["services"]:
        for address in service["transformer"]["addresses"]:
            for variable in re.findall(r"\$\{GEOMESH_([A-Z]+)_ADDRESSES", address):
                found[variable.lower()].add(service["name"])
    return {family: frozenset(names) for family, names in found.items()}


@cache
def operator_secrets() -> dict[str, Doc]:
    return {entry["name"]: entry for entry in yaml.safe_load((KUBERNETES / "operator-secrets.yml").read_text())["secrets"]}


# -- schemas -------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema as the API server's strict field validation reads it: unknown fields refused
    wherever properties are listed (unless the schema keeps unknown fields)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items() if not key.startswith("x-kubernetes-")}
    if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], Doc]:
    """(apiVersion, kind) -> strict JSON schema, from the CRDs kept in tests/deploy/crds/."""
    found = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            found[key] = _strict(version["schema"]["openAPIV3Schema"])
    return found


def schema_problems(render: Render) -> Iterator[str]:
    for doc in render.docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        crd = crd_schemas().get((doc["apiVersion"], doc["kind"]))
        if crd is not None:
            for error in jsonschema.Draft202012Validator(crd).iter_errors(doc):
                yield f"{what}: {'.'.join(map(str, error.absolute_path))}: {error.message}"
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            yield f"{what}: {'.'.join(map(str, error.absolute_path))}: {error.message}"
        except kubernetes_validate.SchemaNotFoundError as error:
            yield f"{what}: no schema ({error.message}); keep its CRD in tests/deploy/crds/"


# -- cross-references ----------------------------------------------------------------------------


def service_problems(render: Render) -> Iterator[str]:
    for service in render.kind("Service"):
        name, spec = service["metadata"]["name"], service["spec"]
        pods = [pod for pod in render.pods if spec.get("selector") and all(pod.labels.get(k) == v for k, v in spec["selector"].items())]
        if not pods:
            yield f"Service {name} selects no pod"
        for port in spec["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in pods:
                if not has_port(pod, target):
                    yield f"Service {name} port {port['port']}: targetPort {target!r} is no container port of {pod.owner}"
        grpc = any(pod.geomesh and pod.component != "edge" for pod in pods)
        if grpc and spec.get("clusterIP") != "None":
            yield f"Service {name} is not headless: the gRPC clients' dns:/// names must see every pod"


def probe_problems(render: Render) -> Iterator[str]:
    options, services = healthcheck_usage()
    script = _image_copies().get("deploy/docker/healthcheck.py")
    for pod in render.pods:
        for container in pod.containers(init=False):
            kinds = [kind for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in container]
            if pod.doc["kind"] != "Job" and pod.geomesh and len(kinds) < 3:
                yield f"{pod.owner} {container['name']}: has only {kinds}"
            for kind in kinds:
                probe = container[kind]
                for action in ("httpGet", "tcpSocket", "grpc"):
                    if action in probe and not has_port(pod, probe[action]["port"], container):
                        yield f"{pod.owner} {container['name']} {kind}: port {probe[action]['port']!r} is not the container's"
                if "httpGet" in probe and served(container) == "edge" and probe["httpGet"]["path"] not in _edge_routes():
                    yield f"{pod.owner} {kind}: the edge has no route {probe['httpGet']['path']}"
                command = probe.get("exec", {}).get("command", [])
                if any(word.endswith("healthcheck.py") for word in command):
                    given = [word for word in command[2:] if word.startswith("--")]
                    if command[1] != script:
                        yield f"{pod.owner} {kind}: {command[1]} is not where the image puts healthcheck.py ({script})"
                    if command[0] != "/opt/venv/bin/python":
                        yield f"{pod.owner} {kind}: {command[0]} is not the image's python"
                    if set(given) - options:
                        yield f"{pod.owner} {kind}: healthcheck.py has no option {sorted(set(given) - options)}"
                    asked = next((word for word in command[2:] if not word.startswith("-")), None)
                    if asked != served(container) or asked not in services:
                        yield f"{pod.owner} {kind}: probes {asked!r} but the container serves {served(container)!r}"


def reference_problems(render: Render) -> Iterator[str]:
    """Every ConfigMap and Secret (and key) a pod reads is rendered, or a Secret the operator provides."""
    listed = operator_secrets()

    def check(owner: str, kind: str, name: str, keys: list[str], optional: bool) -> Iterator[str]:
        rendered = render.data_keys(kind, name)
        entry = listed.get(name) if kind == "Secret" else None
        if rendered is None and entry is not None and render.overlay in entry["overlays"]:
            rendered = set(entry["keys"])
        if rendered is None:
            if not optional:
                yield f"{owner}: {kind} {name} is neither rendered nor in operator-secrets.yml for {render.overlay}"
            return
        for key in keys:
            if key not in rendered:
                yield f"{owner}: {kind} {name} has no key {key!r}"

    for pod in render.pods:
        for container in pod.containers():
            owner = f"{pod.owner} {container['name']}"
            for variable in container.get("env", []):
                for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = variable.get("valueFrom", {}).get(field)
                    if ref:
                        yield from check(owner, kind, ref["name"], [ref["key"]], ref.get("optional", False))
            for source in container.get("envFrom", []):
                for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if field in source:
                        yield from check(owner, kind, source[field]["name"], [], source[field].get("optional", False))
        for volume in pod.spec.get("volumes", []):
            sources = [volume] + volume.get("projected", {}).get("sources", [])
            for source in sources:
                for kind, field, key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
                    if field in source:
                        ref = source[field]
                        name = ref.get(key) or ref.get("name")
                        items = [item["key"] for item in ref.get("items", [])]
                        yield from check(f"{pod.owner} volume {volume['name']}", kind, name, items, ref.get("optional", False))


def secrets_used(render: Render) -> set[str]:
    used = set()
    for pod in render.pods:
        for container in pod.containers():
            used |= {v["valueFrom"]["secretKeyRef"]["name"] for v in container.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})}
            used |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
        for volume in pod.spec.get("volumes", []):
            sources = [volume] + volume.get("projected", {}).get("sources", [])
            used |= {s["secret"].get("secretName") or s["secret"].get("name") for s in sources if "secret" in s}
    return used


def operator_list_problems(render: Render) -> Iterator[str]:
    """operator-secrets.yml lists no Secret an overlay does not use, and the README says how to make each."""
    used = secrets_used(render)
    readme = (KUBERNETES / "README.md").read_text()
    for name, entry in operator_secrets().items():
        if render.overlay in entry["overlays"] and name not in used:
            yield f"operator-secrets.yml lists {name} for {render.overlay}, which does not use it"
        if f"create secret generic {name}" not in readme:
            yield f"deploy/kubernetes/README.md does not say how to create the Secret {name}"


def network_policy_problems(render: Render) -> Iterator[str]:
    policies = render.kind("NetworkPolicy")
    if not any(p["spec"]["podSelector"] == {} and "Ingress" in p["spec"]["policyTypes"] and not p["spec"].get("ingress") for p in policies):
        yield "no default-deny ingress NetworkPolicy"
    for policy in policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        pods = selected(render, spec["podSelector"])
        if not pods:
            yield f"NetworkPolicy {name} selects no pod"
        for rule in spec.get("ingress", []):
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer and not selected(render, peer["podSelector"]):
                    yield f"NetworkPolicy {name}: a peer selects no pod"
                if "ipBlock" in peer:
                    yield f"NetworkPolicy {name}: opens to an ipBlock"
            if not rule.get("from") and any(pod.component != "edge" for pod in pods):
                yield f"NetworkPolicy {name} opens {[pod.owner for pod in pods if pod.component != 'edge']} to everyone"
            for port in rule.get("ports", []):
                for pod in pods:
                    if "port" in port and not has_port(pod, port["port"]):
                        yield f"NetworkPolicy {name}: port {port['port']!r} is not one of {pod.owner}'s"
    # The gRPC plane: exactly the callers geomesh.identity.CALLERS allows (edge -> scheduler, catalog; ...).
    for pod in render.pods:
        if not pod.geomesh or pod.component not in COMPONENTS or pod.component == "edge":
            continue
        callers = set()
        for policy in policies:
            if not matches(policy["spec"]["podSelector"], pod.labels):
                continue
            for rule in policy["spec"].get("ingress", []):
                if any(port.get("port") in ("grpc", container_port(pod.spec["containers"][0], "grpc")) for port in rule.get("ports", [])):
                    callers |= {
                        caller.component.split("-")[0]
                        for peer in rule.get("from", [])
                        if "podSelector" in peer and "namespaceSelector" not in peer
                        for caller in selected(render, peer["podSelector"])
                    }
        expected = set(CALLERS[pod.component.split("-")[0]])
        if callers != expected:
            yield f"{pod.owner}: its gRPC port is open to {sorted(callers)}, geomesh.identity.CALLERS says {sorted(expected)}"


def image_problems(render: Render) -> Iterator[str]:
    for pod in render.pods:
        for container in pod.containers():
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            if pod.geomesh:
                if repository.rsplit("/", 1)[-1] != "geomesh" or tag != VERSION:
                    yield f"{pod.owner} {container['name']}: image {image} is not geomesh:{VERSION} (pyproject.toml)"
            elif not tag or tag == "latest" or "/" in tag:
                yield f"{pod.owner} {container['name']}: image {image} has no pinned tag"
            elif render.overlay != "dev":
                yield f"{pod.owner} {container['name']}: a third-party image ({image}) outside the dev overlay"


def resource_problems(render: Render) -> Iterator[str]:
    for pod in render.pods:
        for container in pod.containers():
            resources = container.get("resources", {})
            for what in ("cpu", "memory"):
                request, limit = resources.get("requests", {}).get(what), resources.get("limits", {}).get(what)
                if request is None or limit is None:
                    yield f"{pod.owner} {container['name']}: no {what} request and limit"
                elif quantity(request) > quantity(limit):
                    yield f"{pod.owner} {container['name']}: {what} request {request} above its limit {limit}"


_TARGETS = {
    "GEOMESH_EDGE_SCHEDULER_ADDRESS": "scheduler",
    "GEOMESH_EDGE_CATALOG_ADDRESS": "catalog",
    "GEOMESH_SCHEDULER_CATALOG_ADDRESS": "catalog",
    **{f"GEOMESH_{family.upper()}_ADDRESSES": f"transformer-{family}" for family in FAMILIES},
}


def address_problems(render: Render) -> Iterator[str]:
    """Each address names a headless Service of the right pods, on the port those pods listen on (a
    headless name resolves to pod addresses: no port mapping), and the registry's variables are all set."""
    wanted = {f"GEOMESH_{name}_ADDRESSES" for name in re.findall(r"\$\{GEOMESH_([A-Z]+)_ADDRESSES", REGISTRY.read_text())}
    for pod in render.pods:
        for container in pod.containers(init=False):
            env = render.env(container)
            if served(container) == "catalog" and wanted - set(env):
                yield f"{pod.owner}: the registry's {sorted(wanted - set(env))} are not set (it would use 127.0.0.1)"
            for variable, component in _TARGETS.items():
                if variable not in env:
                    continue
                for entry in env[variable].split(","):
                    found = re.fullmatch(r"(?:dns:///)?([a-z0-9-]+):(\d+)", entry.strip())
                    if not found:
                        yield f"{pod.owner} {variable}={entry}: not a Service name and port"
                        continue
                    name, port = found.group(1), int(found.group(2))
                    service = render.named("Service", name)
                    if service is None:
                        yield f"{pod.owner} {variable}: no Service {name}"
                        continue
                    if service["spec"].get("clusterIP") != "None":
                        yield f"{pod.owner} {variable}: Service {name} is not headless"
                    targets = [p for p in render.pods if all(p.labels.get(k) == v for k, v in service["spec"].get("selector", {}).items())]
                    if not targets or any(p.component != component for p in targets):
                        yield f"{pod.owner} {variable}: Service {name} does not select the {component} pods"
                    for target in targets:
                        server = target.spec["containers"][0]
                        listening = render.env(server).get(f"GEOMESH_{(served(server) or '').upper()}_PORT")
                        if container_port(server, port) is None or listening != str(port):
                            yield f"{pod.owner} {variable}: {target.owner} does not listen on {port} (its port: {listening})"
                        family = render.env(server).get("GEOMESH_TRANSFORMER_FAMILY")
                        if component.startswith("transformer-") and family != component.removeprefix("transformer-"):
                            yield f"{pod.owner} {variable}: {target.owner} runs the {family} family"


def setting_problems(render: Render) -> Iterator[str]:
    """Every GEOMESH_* variable of a geomesh container is a setting its service reads, with a valid value."""
    for pod in render.pods:
        for container in pod.containers():
            if not pod.geomesh:
                continue
            env = {k: v for k, v in render.env(container).items() if k.startswith("GEOMESH_")}
            service = served(container) or ("scheduler" if container.get("command") == ["geomesh", "migrate"] else None)
            known = {"GEOMESH_LOG_LEVEL"}  # read by `geomesh serve` itself
            if service == "catalog":  # read by the registry (catalog/services.yml)
                known |= {f"GEOMESH_{family.upper()}_ADDRESSES" for family in FAMILIES}
            groups: list[tuple[str, Any]] = [("GEOMESH_MESH_", MeshSettings), ("GEOMESH_S3_", S3Settings)]
            if service is not None:
                groups.append((f"GEOMESH_{service.upper()}_", SETTINGS[service]))
            elif "GEOMESH_CATALOG_DATA_URL" in env:  # the demo-data Job reads the catalog's data URL
                known.add("GEOMESH_CATALOG_DATA_URL")
            for prefix, settings in groups:
                given = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
                known |= {k for k in env if k.startswith(prefix)}
                if prefix == "GEOMESH_MESH_" and "tls_dir" not in given and served(container) is not None:
                    yield f"{pod.owner} {container['name']}: no GEOMESH_MESH_TLS_DIR (a service refuses to start without an identity)"
                try:
                    settings.model_validate(given)
                except ValidationError as error:
                    for refused in error.errors():
                        variable = prefix + "_".join(map(str, refused["loc"])).upper()
                        if refused["type"] == "extra_forbidden":
                            yield f"{pod.owner} {container['name']}: {variable} is no setting of {service or 'this container'}"
                        else:
                            yield f"{pod.owner} {container['name']}: {variable}={refused['input']!r} refused: {refused['msg']}"
            for unknown in sorted(set(env) - known):
                yield f"{pod.owner} {container['name']}: {unknown} is no setting of {service or 'this container'}"


def mount_problems(render: Render) -> Iterator[str]:
    """What a geomesh container writes is a writable volume (the root filesystem is read-only); its mesh
    certificates are its own identity's; its users file is mounted."""
    for pod in render.pods:
        if not pod.geomesh:
            continue
        for container in pod.containers():
            env = render.env(container)
            service = served(container)
            args = container.get("args", [])
            writes = ["/tmp"]
            writes += [env[k] for k in ("GEOMESH_SCHEDULER_DATA_DIR", "GEOMESH_TRANSFORMER_SCRATCH_DIR") if k in env and k.split("_")[1].lower() == service]
            writes += [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--data-dir"]
            if container.get("command") == ["geomesh", "migrate"]:
                writes.append(env.get("GEOMESH_SCHEDULER_DATA_DIR", _image_env().get("GEOMESH_SCHEDULER_DATA_DIR", "")))
            for path in writes:
                found = mount_for(pod, container, path)
                if found is None or found[0].get("readOnly") or "emptyDir" not in found[1] and "persistentVolumeClaim" not in found[1]:
                    yield f"{pod.owner} {container['name']}: {path} is written but is no writable volume"
            files = []
            if service is not None and "GEOMESH_MESH_TLS_DIR" in env:
                identity = "transformer" if service == "transformer" else service
                files += [f"{env['GEOMESH_MESH_TLS_DIR']}/{name}" for name in ("ca.pem", f"{identity}.pem", f"{identity}.key")]
            if "GEOMESH_EDGE_USERS_FILE" in env:
                files.append(env["GEOMESH_EDGE_USERS_FILE"])
            for path in files:
                found = mount_for(pod, container, path)
                if found is None:
                    yield f"{pod.owner} {container['name']}: nothing mounted at {path}"
                    continue
                mount, volume = found
                relative = path[len(mount["mountPath"]):].strip("/")
                source = volume.get("secret") or volume.get("configMap") or {}
                items = [item["path"] for item in source.get("items", [])]
                if items and relative not in items:
                    yield f"{pod.owner} {container['name']}: {path} is not among {volume['name']}'s items {items}"
                if "secret" in volume and source.get("defaultMode", 0o644) & 0o077 & ~0o040:
                    yield f"{pod.owner} volume {volume['name']}: mode {oct(source['defaultMode'])} lets others read keys"


def security_problems(render: Render) -> Iterator[str]:
    image_user = _image_user()
    for pod in render.pods:
        spec, context = pod.spec, pod.spec.get("securityContext", {})
        if spec.get("enableServiceLinks") is not False:
            yield f"{pod.owner}: enableServiceLinks is not false (a Service geomesh-edge would set GEOMESH_EDGE_PORT=tcp://...)"
        if spec.get("automountServiceAccountToken") is not False:
            yield f"{pod.owner}: mounts a service account token it does not use"
        if context.get("runAsNonRoot") is not True or context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            yield f"{pod.owner}: not runAsNonRoot with the RuntimeDefault seccomp profile"
        if pod.geomesh and (context.get("runAsUser"), context.get("fsGroup")) != (image_user, image_user):
            yield f"{pod.owner}: runs as {context.get('runAsUser')}, not the image's user {image_user}"
        for container in pod.containers():
            own = container.get("securityContext", {})
            if own.get("allowPrivilegeEscalation") is not False or own.get("readOnlyRootFilesystem") is not True:
                yield f"{pod.owner} {container['name']}: privilege escalation allowed or root filesystem writable"
            if own.get("capabilities", {}).get("drop") != ["ALL"] or own.get("capabilities", {}).get("add"):
                yield f"{pod.owner} {container['name']}: does not drop ALL capabilities"
        for constraint in spec.get("topologySpreadConstraints", []):
            if not matches(constraint.get("labelSelector"), pod.labels):
                yield f"{pod.owner}: a topology spread constraint does not count its own pods"


def metrics_problems(render: Render) -> Iterator[str]:
    deployments = [pod for pod in render.pods if pod.doc["kind"] == "Deployment" and pod.geomesh]
    if {pod.component for pod in deployments} != COMPONENTS:
        yield f"geomesh Deployments' components {sorted(pod.component for pod in deployments)} are not {sorted(COMPONENTS)}"
    for pod in deployments:
        container = pod.spec["containers"][0]
        service = served(container) or "?"
        env = render.env(container)
        if container_port(container, "metrics") != METRICS_PORT:
            yield f"{pod.owner}: no container port named metrics on {METRICS_PORT}"
        prefix = f"GEOMESH_{service.upper()}_METRICS_"
        if (env.get(prefix + "PORT"), env.get(prefix + "HOST")) != (str(METRICS_PORT), "0.0.0.0"):
            yield f"{pod.owner}: {prefix}PORT/HOST are not {METRICS_PORT} and 0.0.0.0"
    for monitor in render.kind("PodMonitor"):
        spec = monitor["spec"]
        missed = [pod.owner for pod in deployments if not matches(spec["selector"], pod.labels)]
        if missed:
            yield f"PodMonitor {monitor['metadata']['name']} misses {missed}"
        if spec.get("jobLabel") != "app.kubernetes.io/component":
            yield f"PodMonitor {monitor['metadata']['name']}: job is not the component label"
        if [endpoint.get("port") for endpoint in spec["podMetricsEndpoints"]] != ["metrics"]:
            yield f"PodMonitor {monitor['metadata']['name']}: does not scrape the port named metrics"


def disruption_problems(render: Render) -> Iterator[str]:
    budgets = render.kind("PodDisruptionBudget")
    for budget in budgets:
        if not selected(render, budget["spec"]["selector"]):
            yield f"PodDisruptionBudget {budget['metadata']['name']} selects no pod"
    for pod in render.pods:
        if pod.doc["kind"] == "Deployment" and pod.geomesh:
            count = sum(matches(budget["spec"]["selector"], pod.labels) for budget in budgets)
            if count != 1:
                yield f"{pod.owner}: {count} PodDisruptionBudgets"


def migration_problems(render: Render) -> Iterator[str]:
    jobs = [pod for pod in render.pods for c in pod.containers() if c.get("command") == ["geomesh", "migrate"]]
    schedulers = [pod for pod in render.pods if served(pod.spec["containers"][0]) == "scheduler"]
    if len(jobs) != 1 or jobs[0].doc["kind"] != "Job":
        yield f"not one Job running `geomesh migrate`: {[pod.owner for pod in jobs]}"
    for scheduler in schedulers:
        env = render.env(scheduler.spec["containers"][0])
        if env.get("GEOMESH_SCHEDULER_MIGRATE") != "false":
            yield f"{scheduler.owner}: migrates at start although the Job does it"
        for job in jobs:
            job_env = render.env(job.spec["containers"][0])
            if job_env.get("GEOMESH_SCHEDULER_DATABASE_URL") != env.get("GEOMESH_SCHEDULER_DATABASE_URL"):
                yield f"{job.owner}: migrates another database than {scheduler.owner} uses"
        if not env.get("GEOMESH_SCHEDULER_DATABASE_URL", "").startswith("<"):
            yield f"{scheduler.owner}: the job store URL is not from a Secret"


def storage_problems(render: Render) -> Iterator[str]:
    """The catalog's granule links are readable by the transformers; the buckets exist in the dev store."""
    envs = {pod.component: render.env(pod.spec["containers"][0]) for pod in render.pods if pod.geomesh}
    data_url = envs["catalog"].get("GEOMESH_CATALOG_DATA_URL")
    for family in FAMILIES:
        allowed = envs[f"transformer-{family}"].get("GEOMESH_TRANSFORMER_ALLOWED_URLS", "").split(",")
        if data_url and not any(data_url.startswith(prefix.strip()) for prefix in allowed if prefix.strip()):
            yield f"transformer-{family}: GEOMESH_TRANSFORMER_ALLOWED_URLS {allowed} does not cover the catalog's {data_url}"
    endpoint = envs["scheduler"].get("GEOMESH_S3_ENDPOINT_URL")
    store = next((c for pod in render.pods for c in pod.containers() if "seaweedfs" in c["image"]), None)
    if endpoint and store is not None:
        host, port = re.fullmatch(r"https?://([a-z0-9-]+):(\d+)/?", endpoint).groups()  # type: ignore[union-attr]
        service = render.named("Service", host)
        if service is None or int(port) not in [p["port"] for p in service["spec"]["ports"]]:
            yield f"GEOMESH_S3_ENDPOINT_URL {endpoint}: no such Service and port"
        buckets: list[str] = next((a.split("=", 1)[1].split(",") for a in store["args"] if a.startswith("-bucket=")), [])
        for url in (data_url, envs["scheduler"].get("GEOMESH_SCHEDULER_STAGING_URL")):
            if url and split_s3_url(url)[0] not in buckets:
                yield f"{url}: its bucket is not one SeaweedFS creates ({buckets})"


def sizing_problems(render: Render) -> Iterator[str]:
    """A transformer's workers fit its memory limit, the largest output allowed fits a worker, and the scratch
    it may fill fits its scratch volume."""
    for pod in render.pods:
        container = pod.spec["containers"][0]
        if served(container) != "transformer":
            continue
        env = render.env(container)
        given = {k.removeprefix("GEOMESH_TRANSFORMER_").lower(): v for k, v in env.items() if k.startswith("GEOMESH_TRANSFORMER_")}
        try:
            settings = TransformerSettings.model_validate(given)
        except ValidationError:
            continue  # setting_problems names what is refused
        workers = settings.workers + settings.light_workers
        limit = quantity(container["resources"]["limits"]["memory"])
        if workers * settings.worker_memory_bytes + TRANSFORMER_IDLE > limit:
            yield (f"{pod.owner}: {workers} workers x {settings.worker_memory_bytes >> 20} MiB + {TRANSFORMER_IDLE >> 20} MiB idle "
                   f"exceed the memory limit {container['resources']['limits']['memory']}")
        if settings.max_output_bytes > MEASURED_MAX_OUTPUT or settings.worker_memory_bytes < LARGEST_WORKER:
            yield f"{pod.owner}: a worker's {settings.worker_memory_bytes >> 20} MiB cannot make the largest output allowed"
        found = mount_for(pod, container, str(settings.scratch_dir))
        size_limit = found[1].get("emptyDir", {}).get("sizeLimit") if found else None
        needed = settings.max_scratch_bytes + workers * (settings.max_download_bytes + 2 * settings.max_output_bytes)
        if size_limit is None or quantity(size_limit) < needed:
            yield f"{pod.owner}: scratch {settings.scratch_dir} ({size_limit}) is less than the {needed / 2**30:.1f} GiB it may hold"


def autoscaling_problems(render: Render) -> Iterator[str]:
    exported = exported_metrics()
    rules = {rule["name"]["as"]: rule["metricsQuery"] for rule in yaml.safe_load(ADAPTER_RULES.read_text())["externalRules"]}
    scaled: dict[str, int] = {}
    queries: list[tuple[str, str, str]] = []  # (owner, target Deployment, query)
    for scaler in render.kind("ScaledObject"):
        target = scaler["spec"]["scaleTargetRef"]["name"]
        for trigger in scaler["spec"]["triggers"]:
            if trigger["type"] != "prometheus":
                yield f"ScaledObject {scaler['metadata']['name']}: a {trigger['type']} trigger"
                continue
            queries.append((f"ScaledObject {scaler['metadata']['name']}", target, trigger["metadata"]["query"]))
        scaled[target] = scaled.get(target, 0) + 1
    for hpa in render.kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        for metric in hpa["spec"]["metrics"]:
            name = metric.get("external", {}).get("metric", {}).get("name")
            if name not in rules:
                yield f"HPA {hpa['metadata']['name']}: prometheus-adapter-rules.yaml defines no external metric {name}"
            else:
                queries.append((f"HPA {hpa['metadata']['name']} ({name})", target, rules[name]))
        scaled[target] = scaled.get(target, 0) + 1
    for owner, target, query in queries:
        deployment = render.named("Deployment", target)
        if deployment is None:
            yield f"{owner}: scales {target}, which is not rendered"
            continue
        family = render.env(deployment["spec"]["template"]["spec"]["containers"][0]).get("GEOMESH_TRANSFORMER_FAMILY", "")
        names, matchers = promql(query)
        for name in sorted(names - set(exported)):
            yield f"{owner}: {name} is no metric of geomesh/metrics.py"
        for label in matchers:
            if label not in ("job", "namespace") and not all(label in exported.get(name, ()) for name in names):
                yield f"{owner}: {sorted(names)} have no label {label}"
        services = set(matchers.get("service", "").split("|")) - {""}
        if services != family_services().get(family):
            yield f"{owner}: queues of {sorted(services)}, but the {family} family serves {sorted(family_services().get(family, ()))}"
        if matchers.get("job", "scheduler") != "scheduler":
            yield f"{owner}: reads job={matchers['job']}; the queue is the schedulers' (job = component)"
    for pod in render.pods:
        if pod.component.startswith("transformer-"):
            count = scaled.get(pod.doc["metadata"]["name"], 0)
            if render.overlay != "dev" and count != 1:
                yield f"{pod.owner}: {count} autoscalers"
            if count and "replicas" in pod.doc["spec"]:
                yield f"{pod.owner}: sets replicas, which every apply would reset under its autoscaler"


CHECKS: tuple[Callable[[Render], Iterator[str]], ...] = (
    service_problems,
    probe_problems,
    reference_problems,
    operator_list_problems,
    network_policy_problems,
    image_problems,
    resource_problems,
    address_problems,
    setting_problems,
    mount_problems,
    security_problems,
    metrics_problems,
    disruption_problems,
    migration_problems,
    storage_problems,
    sizing_problems,
    autoscaling_problems,
)


def problems(render: Render) -> list[str]:
    return [problem for check in CHECKS for problem in check(render)]


# -- what the image says -------------------------------------------------------------------------


@cache
def _image_copies() -> dict[str, str]:
    """The Dockerfile's COPY source -> destination (its --flags left out)."""
    copies: dict[str, str] = {}
    for line in re.findall(r"^COPY\s+(.+?)\s*$", DOCKERFILE.read_text(), re.MULTILINE):
        *sources, destination = [word for word in line.split() if not word.startswith("--")]
        copies |= {source: destination for source in sources}
    return copies


@cache
def _image_env() -> dict[str, str]:
    return dict(re.findall(r"\b(GEOMESH_[A-Z_]+)=(\S+?)\s*\\?$", DOCKERFILE.read_text(), re.MULTILINE))


@cache
def _image_user() -> int:
    found = re.search(r"^USER\s+(\d+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert found, "the Dockerfile names no numeric USER"
    return int(found.group(1))


@cache
def _edge_routes() -> frozenset[str]:
    return frozenset(
        route for path in (ROOT / "edge").rglob("*.py") for route in re.findall(r"routes\.get\(\"([^\"{]+)\"\)", path.read_text())
    )


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_schemas(overlay: str) -> None:
    found = list(schema_problems(render(overlay)))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_holds_together(overlay: str) -> None:
    found = problems(render(overlay))
    assert not found, "\n".join(found)


def test_every_overlay_is_tested() -> None:
    assert sorted(path.name for path in (KUBERNETES / "overlays").iterdir() if path.is_dir()) == sorted(OVERLAYS)


def test_every_family_has_a_service_and_a_queue() -> None:
    assert all(family_services()[family] for family in FAMILIES), family_services()


def _edit(kind: str, name: str, change: Callable[[Doc], None]) -> Callable[[Render], None]:
    def edit(r: Render) -> None:
        doc = r.named(kind, name)
        assert doc is not None, f"{kind}/{name} is not rendered"
        change(doc)

    return edit


def _container(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]["containers"][0]


def _volume(doc: Doc, name: str) -> Doc:
    return next(v for v in doc["spec"]["template"]["spec"]["volumes"] if v["name"] == name)


def _set_env(name: str, value: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        env = _container(doc)["env"]
        env[:] = [v for v in env if v["name"] != name] + [{"name": name, "value": value}]

    return change


BROKEN: dict[str, tuple[Callable[[Render], None], str]] = {
    "a Service selecting nothing": (
        _edit("Service", "geomesh-scheduler", lambda d: d["spec"]["selector"].update({"app.kubernetes.io/component": "schedular"})),
        "Service geomesh-scheduler selects no pod",
    ),
    "a Service's targetPort missing": (
        _edit("Service", "geomesh-edge", lambda d: d["spec"]["ports"][0].update(targetPort="web")),
        "targetPort 'web' is no container port",
    ),
    "a probe on a missing port": (
        _edit("Deployment", "geomesh-edge", lambda d: _container(d)["readinessProbe"]["httpGet"].update(port="htp")),
        "readinessProbe: port 'htp'",
    ),
    "a probe of another service": (
        _edit("Deployment", "geomesh-catalog", lambda d: _container(d)["livenessProbe"]["exec"]["command"].__setitem__(2, "scheduler")),
        "probes 'scheduler' but the container serves 'catalog'",
    ),
    "a Secret key nobody provides": (
        _edit("Deployment", "geomesh-scheduler", lambda d: next(v for v in _container(d)["env"] if v["name"].endswith("DATABASE_URL"))
              ["valueFrom"]["secretKeyRef"].update(key="uri")),
        "Secret geomesh-database has no key 'uri'",
    ),
    "a Secret nobody provides": (
        _edit("Deployment", "geomesh-edge", lambda d: _volume(d, "certs")["secret"].update(secretName="certs")),
        "Secret certs is neither rendered nor in operator-secrets.yml",
    ),
    "another identity's certificate": (
        _edit("Deployment", "geomesh-edge", lambda d: _volume(d, "certs")["secret"]["items"][1]
              .update(key="scheduler.pem", path="scheduler.pem")),
        "/var/lib/geomesh/certs/edge.pem is not among certs's items",
    ),
    "the registry pointing nowhere": (
        _edit("Deployment", "geomesh-catalog", _set_env("GEOMESH_NETCDF_ADDRESSES", "dns:///geomesh-netcdf:50061")),
        "GEOMESH_NETCDF_ADDRESSES: no Service geomesh-netcdf",
    ),
    "an address on the Service's port, not the pods'": (
        _edit("Deployment", "geomesh-edge", _set_env("GEOMESH_EDGE_SCHEDULER_ADDRESS", "dns:///geomesh-scheduler:443")),
        "does not listen on 443",
    ),
    "a misspelt setting": (
        _edit("Deployment", "geomesh-scheduler", _set_env("GEOMESH_SCHEDULER_STAGING_URI", "s3://geomesh-staging/outputs")),
        "GEOMESH_SCHEDULER_STAGING_URI is no setting of scheduler",
    ),
    "a setting's value refused": (
        _edit("Deployment", "geomesh-transformer-swath", _set_env("GEOMESH_TRANSFORMER_FAMILY", "hdf")),
        "GEOMESH_TRANSFORMER_FAMILY='hdf' refused: Value error, unknown transformer family 'hdf'",
    ),
    "a metric that does not exist": (
        _edit("ScaledObject", "geomesh-transformer-gdal", lambda d: d["spec"]["triggers"][0]["metadata"].update(
            query='sum(max by (service) (geomesh_work_item_queued{service=~"harmony/gdal"}))')),
        "geomesh_work_item_queued is no metric",
    ),
    "a queue missing a family's service": (
        _edit("ScaledObject", "geomesh-transformer-netcdf", lambda d: d["spec"]["triggers"][0]["metadata"].update(
            query='sum(max by (service) (geomesh_work_items_queued{service=~"harmony/netcdf"}))')),
        "but the netcdf family serves ['harmony/netcdf', 'harmony/netcdf-to-zarr']",
    ),
    "workers that do not fit the limit": (
        _edit("Deployment", "geomesh-transformer-gdal", lambda d: _container(d)["resources"]["limits"].update(memory="4Gi")),
        "exceed the memory limit 4Gi",
    ),
    "scratch larger than its volume": (
        _edit("Deployment", "geomesh-transformer-gdal", _set_env("GEOMESH_TRANSFORMER_MAX_SCRATCH_BYTES", str(16 * 2**30))),
        "is less than the 22.0 GiB it may hold",
    ),
    "a transformer open to the edge": (
        _edit("NetworkPolicy", "geomesh-transformers", lambda d: d["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
              .pop("app.kubernetes.io/component")),
        "geomesh.identity.CALLERS says ['scheduler']",
    ),
    "a NetworkPolicy selecting nothing": (
        _edit("NetworkPolicy", "geomesh-catalog", lambda d: d["spec"]["podSelector"]["matchLabels"].update({"app.kubernetes.io/name": "geo"})),
        "NetworkPolicy geomesh-catalog selects no pod",
    ),
    "an image of another release": (
        _edit("Deployment", "geomesh-edge", lambda d: _container(d).update(image="registry.example.org/geomesh:0.0.9")),
        "is not geomesh:",
    ),
    "no memory limit": (
        _edit("Deployment", "geomesh-scheduler", lambda d: _container(d)["resources"]["limits"].pop("memory")),
        "no memory request and limit",
    ),
    "service links left on": (
        _edit("Deployment", "geomesh-edge", lambda d: d["spec"]["template"]["spec"].pop("enableServiceLinks")),
        "enableServiceLinks is not false",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_manifest_is_caught(case: str) -> None:
    edit, expected = BROKEN[case]
    broken = render("prod")
    edit(broken)
    found = problems(broken)
    assert any(expected in problem for problem in found), f"{expected!r} not in:\n" + "\n".join(found)


SCHEMA_BROKEN: dict[str, tuple[Callable[[Render], None], str]] = {
    "an unknown field (strict)": (
        _edit("Deployment", "geomesh-edge", lambda d: _container(d).update(livenesProbe={})),
        "'livenesProbe' was unexpected",
    ),
    "an HPA field in a ScaledObject": (
        _edit("ScaledObject", "geomesh-transformer-gdal", lambda d: d["spec"].update(minReplicas=1)),
        "ScaledObject/geomesh-transformer-gdal: spec: Additional properties",
    ),
    "a PodMonitor without a selector": (
        _edit("PodMonitor", "geomesh", lambda d: d["spec"].pop("selector")),
        "'selector' is a required property",
    ),
}


@pytest.mark.parametrize("case", SCHEMA_BROKEN)
def test_a_manifest_off_its_schema_is_caught(case: str) -> None:
    edit, expected = SCHEMA_BROKEN[case]
    broken = render("prod")
    edit(broken)
    found = list(schema_problems(broken))
    assert any(expected in problem for problem in found), f"{expected!r} not in:\n" + "\n".join(found)
