"""deploy/prometheus and deploy/grafana, checked against the metrics the services really export.

- promtool checks rules.yml and prometheus.yml and runs the rules' unit tests (deploy/prometheus/
  tests/: a firing and a quiet case for every alert); each plausible mistake in MUTATIONS, made in
  rules.yml, makes those unit tests fail.
- Every metric name, label and known label value in the rules, in the unit tests' series and in the
  dashboard's queries is one geomesh/metrics.py defines. The selectors are read from PromQL by the
  small lexer below, itself tested on queries that must be refused.
- A real `geomesh up` (every service its own process and registry; the in-process `mesh` fixture of
  tests/conftest.py runs all services in this one process, sharing one registry, with no metrics
  port) answers synchronous requests, a few callers' errors and an asynchronous job (whose items
  queue while the gdal transformer is stopped for a moment). Each service's
  /metrics, read with prometheus_client's parser, holds what the rules read, with that service's own
  labels only. A real Prometheus scrapes them through prometheus.yml's relabelings (targets carrying
  the __meta_kubernetes_* labels Kubernetes discovery would give them) and evaluates rules.yml and
  every dashboard query: no alert is even pending on the healthy mesh, and stopping the swath
  transformer makes GeomeshNoReadyTransformer and GeomeshTargetDown pending.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from catalog.registry import Registry
from geomesh import metrics
from geomesh.settings import TRANSFORMER_FAMILIES
from scheduler.jobs.states import JobStatus
from tests.conftest import GLOBAL_GRANULE, HARMONY_EXAMPLE
from tests.loopback import geomesh_up

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "geomesh.json"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NEEDS_PROMTOOL = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian's `prometheus` package; .ci/run installs it)"
)

# The labels Prometheus gives every target (prometheus.yml; a PodMonitor gives the same), and the jobs.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
COMPONENTS = ("edge", "scheduler", "catalog", *(f"transformer-{family}" for family in TRANSFORMER_FAMILIES))
GRPC_SERVICES = frozenset(COMPONENTS) - {"edge"}
# The registry's services (catalog/services.yml), which label the schedulers' work item metrics; "unknown"
# names the items of jobs made before their service was recorded (scheduler/jobs/store.py).
REGISTRY_SERVICES = frozenset(service.name for service in Registry.load().services)

# The values some labels can take, from the code that sets them.
KNOWN_VALUES: dict[tuple[str, str], frozenset[str]] = {
    ("geomesh_grpc_server_handled_total", "code"): frozenset(code.name for code in grpc.StatusCode),
    ("geomesh_grpc_client_calls_total", "code"): frozenset(code.name for code in grpc.StatusCode),
    ("geomesh_jobs", "status"): frozenset(status.value for status in JobStatus),
    # scheduler/dispatcher.py
    ("geomesh_work_items_finished_total", "outcome"): frozenset({"successful", "retried", "failed", "lost", "waiting"}),
    ("geomesh_staging_free_bytes", "backend"): frozenset({"file"}),  # S3 has no size
    # transformers/workers.py and transformers/serving.py
    ("geomesh_transformer_refused_total", "reason"): frozenset({"queue_full", "scratch_full", "too_large"}),
    ("geomesh_db_connections", "state"): frozenset({"in_use", "idle"}),
    ("geomesh_staging_bytes_total", "backend"): frozenset({"file", "s3"}),
    ("geomesh_dependency_up", "dependency"): frozenset({"job_store"}),
}
for _server in ("geomesh_grpc_server_handled_total", "geomesh_grpc_server_handling_seconds_bucket",
                "geomesh_grpc_server_handling_seconds_count", "geomesh_grpc_server_handling_seconds_sum"):
    KNOWN_VALUES[(_server, "service")] = GRPC_SERVICES
for _name in ("geomesh_transformer_workers", "geomesh_transformer_workers_busy", "geomesh_transformer_queued"):
    KNOWN_VALUES[(_name, "family")] = frozenset(TRANSFORMER_FAMILIES)
    KNOWN_VALUES[(_name, "pool")] = frozenset({"light", "heavy"})
KNOWN_VALUES[("geomesh_transformer_refused_total", "family")] = frozenset(TRANSFORMER_FAMILIES)
KNOWN_VALUES[("geomesh_output_bytes_total", "service")] = GRPC_SERVICES - {"scheduler", "catalog"}
for _name in ("geomesh_work_items_queued", "geomesh_work_items_in_flight", "geomesh_work_items_finished_total",
              "geomesh_work_item_seconds_bucket", "geomesh_work_item_seconds_count", "geomesh_work_item_seconds_sum"):
    KNOWN_VALUES[(_name, "service")] = REGISTRY_SERVICES | {"unknown"}
HTTP_STATUS = re.compile(r"[1-5]\d\d")


# --- PromQL, read just enough: the series selected, and the labels named ------------------------

_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>\#[^\n]*)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<range>\[[^\]\[]*\])
    |(?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w:]))
    |(?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>(){},@])""",
    re.X,
)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_WORDS = {"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"}
# Functions whose string arguments name labels: argument index -> made (a new label) or read.
_LABEL_ARGUMENTS = {"label_replace": {1: "made", 3: "read"}, "label_join": {1: "made"}, "count_values": {0: "made"}}


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)  # by, without, on, ignoring, group_left/right
    read: set[str] = field(default_factory=set)  # labels label_replace/label_join read
    made: set[str] = field(default_factory=set)  # labels they (or count_values) make


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while at < len(expr):
        match = _TOKEN.match(expr, at)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[at:at + 20]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group()))
        at = match.end()
    return tokens


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def parse(expr: str) -> Query:
    """The selectors and label names of a PromQL expression (Grafana's $variables allowed in
    strings and ranges). Raises ValueError on what it cannot read, rather than guess."""
    tokens = _tokens(expr)
    query = Query()
    calls: list[list[Any]] = []  # per open parenthesis: [function or None, argument index]
    pending: str | None = None  # an aggregation whose arguments come after its grouping
    at = 0

    def matchers(start: int) -> tuple[tuple[tuple[str, str, str], ...], int]:
        found, at = [], start + 1
        while tokens[at][1] != "}":
            (kind, label), (_, operator), (value_kind, value) = tokens[at:at + 3]
            if kind not in ("ident", "string") or operator not in ("=", "!=", "=~", "!~") or value_kind != "string":
                raise ValueError(f"cannot read the label matchers of {expr!r}")
            found.append((_unquote(label) if kind == "string" else label, operator, _unquote(value)))
            at += 3
            if tokens[at][1] == ",":
                at += 1
            elif tokens[at][1] != "}":
                raise ValueError(f"cannot read the label matchers of {expr!r}")
        return tuple(found), at + 1

    try:
        while at < len(tokens):
            kind, text = tokens[at]
            following = tokens[at + 1][1] if at + 1 < len(tokens) else ""
            if kind == "ident" and text in _GROUPING:
                at += 1
                if following == "(":
                    at += 1
                    while tokens[at][1] != ")":
                        if tokens[at][0] == "ident":
                            query.grouping.add(tokens[at][1])
                        elif tokens[at][1] != ",":
                            raise ValueError(f"cannot read the labels after {text} in {expr!r}")
                        at += 1
                    at += 1
                continue
            if kind == "ident" and text.lower() in _WORDS:
                at += 1
                continue
            if kind == "ident" and following == "(":
                calls.append([text, 0])
                at += 2
                continue
            if kind == "ident" and following not in ("by", "without"):
                if following == "{":
                    found, at = matchers(at + 1)
                else:
                    found, at = (), at + 1
                query.selectors.append(Selector(text, found))
                continue
            if kind == "ident":  # an aggregation with its grouping first: sum by (x) (...)
                pending = text
                at += 1
                continue
            if text == "{":
                found, at = matchers(at)
                names = [value for label, operator, value in found if label == "__name__" and operator == "="]
                query.selectors.append(Selector(names[0] if names else None, found))
                continue
            if text == "(":
                calls.append([pending, 0])
                pending = None
            elif text == ")":
                calls.pop()
            elif text == ",":
                calls[-1][1] += 1
            elif kind == "string" and calls:
                function, argument = calls[-1]
                role = _LABEL_ARGUMENTS.get(function or "", {}).get(argument)
                if function == "label_join" and argument >= 3:
                    role = "read"
                if role == "made":
                    query.made.add(_unquote(text))
                elif role == "read" and _unquote(text):  # label_replace(v, "x", "y", "", ""): reads none
                    query.read.add(_unquote(text))
            at += 1
    except IndexError:
        raise ValueError(f"PromQL ends too early or closes what it did not open: {expr!r}") from None
    if calls or pending:
        raise ValueError(f"PromQL leaves a parenthesis open: {expr!r}")
    return query


# --- What the services define ---------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    series: Mapping[str, frozenset[str]]  # a name a query may select -> its labels (the targets' aside)
    values: Mapping[tuple[str, str], frozenset[str]]  # (name, label) -> the values it can take


def defined_series() -> dict[str, frozenset[str]]:
    """Every sample name geomesh/metrics.py's collectors expose, with its labels. The families and
    their types are the registry's; the label names the collectors' (a labelled metric without
    children shows none in the registry)."""
    families = {family.name: family for family in REGISTRY.collect()}
    collectors = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    series: dict[str, frozenset[str]] = {}
    for collector in collectors:
        name = collector._name
        family = families[name]  # KeyError: defined in geomesh/metrics.py but not registered
        labels = frozenset(collector._labelnames)
        if family.type == "counter":
            series |= {f"{name}_total": labels, f"{name}_created": labels}
        elif family.type == "gauge":
            series[name] = labels
        elif family.type == "histogram":
            series |= {f"{name}_bucket": labels | {"le"}, f"{name}_count": labels, f"{name}_sum": labels, f"{name}_created": labels}
        elif family.type == "info":
            series[f"{name}_info"] = labels | {label for sample in family.samples for label in sample.labels}
        else:
            raise AssertionError(f"{name}: a {family.type}, which this test does not know how to read")
    registered = {name for name in families if name.startswith("geomesh_")}
    assert registered == {collector._name for collector in collectors}, "geomesh metrics registered outside geomesh/metrics.py"
    return series


def recording_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "record" in rule]


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def level_labels(record: str) -> frozenset[str]:
    """level:metric:operations: the level is the labels kept, joined by `_` (`mesh`: none)."""
    level = record.split(":")[0]
    return frozenset() if level == "mesh" else frozenset(level.split("_"))


def vocabulary() -> Vocabulary:
    """geomesh's metrics, Prometheus' own `up`, and rules.yml's recorded series (with the labels
    their level names, and the values their sources' labels take)."""
    series = {**defined_series(), "up": frozenset()}
    values = dict(KNOWN_VALUES)
    for rule in recording_rules():
        record = rule["record"]
        assert record.count(":") == 2, f"{record}: not named level:metric:operations"
        series[record] = level_labels(record)
        sources = parse(rule["expr"]).selectors
        for label in series[record]:
            known = [values.get((source.name or "", label)) for source in sources if label in series.get(source.name or "", ())]
            if known and all(known):
                values[(record, label)] = frozenset().union(*(v for v in known if v))
    return Vocabulary(series, values)


def problems(expr: str, words: Vocabulary) -> list[str]:
    """What in expr is not what the services export: unknown series, labels a series lacks,
    values a label never takes, grouping by labels none of its series has."""
    query = parse(expr)
    found = [] if query.selectors else [f"{expr!r} selects no series"]
    in_scope = set(TARGET_LABELS) | query.made
    for selector in query.selectors:
        if selector.name is None:
            found.append(f"{expr!r}: a selector without a metric name")
            continue
        labels = words.series.get(selector.name)
        if labels is None:
            found.append(f"{selector.name}: no such metric (geomesh/metrics.py) or recorded series (rules.yml)")
            continue
        in_scope |= labels
        for label, operator, value in selector.matchers:
            if label not in labels | TARGET_LABELS:
                found.append(f"{selector.name} has no label {label!r} (its labels: {', '.join(sorted(labels)) or 'none'})")
                continue
            known = COMPONENTS if label == "job" else words.values.get((selector.name, label))
            if label == "status" and selector.name.startswith("geomesh_http_request"):
                plain = [part for part in _plain_values(operator, value) if not HTTP_STATUS.fullmatch(part)]
                found += [f"{selector.name}{{status={part!r}}}: not an HTTP status" for part in plain]
            elif known is not None:
                found += [
                    f"{selector.name}{{{label}={part!r}}}: {label} is one of {', '.join(sorted(known))}"
                    for part in _plain_values(operator, value) if part not in known
                ]
    for label in sorted((query.grouping | query.read) - in_scope):
        found.append(f"{expr!r}: no series in it has the label {label!r}")
    return found


def _plain_values(operator: str, value: str) -> list[str]:
    """The literal values a matcher names: an equality's, or a regex's plain alternatives
    (`a|b`; `5..` or `transformer-.+` name none). Grafana's $variables are left out."""
    if "$" in value:
        return []
    if operator in ("=", "!="):
        return [value]
    plain, alternatives = [], _alternatives(value)
    while alternatives:
        part = alternatives.pop()
        group = re.search(r"\(([\w/|-]*)\)", part)  # transformer-(gdal|netcdf): each in full
        if group:
            alternatives += [part[:group.start()] + choice + part[group.end():] for choice in group[1].split("|")]
        elif re.fullmatch(r"[\w/-]+", part):
            plain.append(part)
    return plain


def _alternatives(regex: str) -> list[str]:
    """A regex's top-level alternatives: `a|b(c|d)` is `a` and `b(c|d)`."""
    parts, depth, start = [], 0, 0
    for at, char in enumerate(regex):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "|" and depth == 0:
            parts.append(regex[start:at])
            start = at + 1
    return [*parts, regex[start:]]


# --- The queries of deploy/ ---------------------------------------------------------------------


def rule_queries() -> list[tuple[str, str]]:
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    return [(rule.get("record") or rule["alert"], rule["expr"]) for rule in rules]


def unit_test_series() -> list[tuple[str, str]]:
    """The unit tests' input series."""
    return [
        (f"{path.name} test {number}", series["series"])
        for path in UNIT_TESTS
        for number, test in enumerate(yaml.safe_load(path.read_text())["tests"])
        for series in test.get("input_series", [])
    ]


def unit_test_queries() -> list[tuple[str, str]]:
    """The unit tests' input series, their expressions and the samples they expect."""
    found = unit_test_series()
    for path in UNIT_TESTS:
        for number, test in enumerate(yaml.safe_load(path.read_text())["tests"]):
            where = f"{path.name} test {number}"
            for check in test.get("promql_expr_test", []):
                found.append((where, check["expr"]))
                found += [(where, sample["labels"]) for sample in check.get("exp_samples", [])]
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    """Every panel's expression, and the label_values() queries of the dashboard's variables
    (as `metric{...}` plus `sum by (label)`, which names the label the variable lists)."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"] if panel["type"] != "row"
        for target in panel["targets"]
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: not label_values(series, label)"
            found.append((f"variable {variable['name']}", f"sum by ({match[2]}) ({match[1]})"))
    return found


# --- promtool -----------------------------------------------------------------------------------


def promtool(*args: str | Path, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


@NEEDS_PROMTOOL
def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rule_queries())} rules found" in checked.stdout


@NEEDS_PROMTOOL
def test_promtool_checks_the_scrape_config(tmp_path: Path) -> None:
    """As written; where this promtool has no Kubernetes discovery (Debian builds it without), with
    file_sd_configs in its place: everything else (relabelings, rule files) is still checked."""
    config = yaml.safe_load(CONFIG.read_text())
    assert [scrape["kubernetes_sd_configs"] for scrape in config["scrape_configs"]] == [[{"role": "pod"}]]
    assert config["rule_files"] == ["rules.yml"]
    checked = promtool("check", "config", CONFIG)
    if checked.returncode != 0 and "field kubernetes_sd_configs not found" in checked.stdout + checked.stderr:
        for scrape in config["scrape_configs"]:
            del scrape["kubernetes_sd_configs"]
            scrape["file_sd_configs"] = [{"files": ["targets.json"]}]
        shutil.copy(RULES, tmp_path / "rules.yml")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        checked = promtool("check", "config", tmp_path / "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout + checked.stderr


@NEEDS_PROMTOOL
def test_the_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", *(path.relative_to(PROMETHEUS_DIR) for path in UNIT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(UNIT_TESTS)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases: dict[str, set[bool]] = {}
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                cases.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    alerts = {rule["alert"] for rule in alerting_rules()}
    assert alerts, "rules.yml has no alerts"
    assert set(cases) <= alerts, f"unit tests of alerts rules.yml lacks: {set(cases) - alerts}"
    untested = {alert: {True, False} - cases.get(alert, set()) for alert in alerts}
    assert not {alert: missing for alert, missing in untested.items() if missing}, "alerts without a firing (True) or quiet (False) case"


# Mistakes rules.yml could make, each of which the unit tests must catch: (what, text, replacement,
# the unit test file that catches it).
MUTATIONS = [
    ("4xx counted as server errors", 'status=~"5.."}[5m]', 'status=~"[45].."}[5m]', "errors.yml"),
    ("499 counted as a server error", 'status=~"5.."}[5m]', 'status=~"5..|499"}[5m]', "errors.yml"),
    ("redirects counted as errors", 'status=~"5.."}[5m]', 'status=~"[35].."}[5m]', "errors.yml"),
    ("the HTTP threshold inclusive", "route:geomesh_http_errors:ratio_rate5m > 0.05", "route:geomesh_http_errors:ratio_rate5m >= 0.05", "errors.yml"),
    ("rare 5xx enough to page", "          and route:geomesh_http_requests:rate5m > 1 / 60\n", "", "errors.yml"),
    ("a route without errors without a ratio", "(route:geomesh_http_errors:rate5m or route:geomesh_http_requests:rate5m * 0)",
     "route:geomesh_http_errors:rate5m", "errors.yml"),
    ("rare gRPC errors enough to alert", "          and service_method:geomesh_grpc_server_handled:rate5m > 1 / 60\n", "", "errors.yml"),
    ("CANCELLED counted as a gRPC error", 'code!~"OK|CANCELLED|', 'code!~"OK|', "errors.yml"),
    ("UNIMPLEMENTED (the 422) counted as a gRPC error", "|RESOURCE_EXHAUSTED|UNIMPLEMENTED", "|RESOURCE_EXHAUSTED", "errors.yml"),
    ("the schedulers' queue counts summed", "max by (service) (geomesh_work_items_queued)", "sum by (service) (geomesh_work_items_queued)", "jobs.yml"),
    ("a draining queue called stalled", "service:geomesh_work_items_queued:max >= service:geomesh_work_items_queued:max offset 10m",
     "service:geomesh_work_items_queued:max offset 10m >= 0", "jobs.yml"),
    ("a queue held minutes called stalled", "service:geomesh_work_items_queued:max >= service:geomesh_work_items_queued:max offset 10m",
     "delta(service:geomesh_work_items_queued:max[10m]) >= 0", "jobs.yml"),
    ("items waiting counted as progress", 'outcome="successful"}[10m]', 'outcome=~"successful|waiting"}[10m]', "jobs.yml"),
    ("another service's successes counted as progress", "unless on (service) (sum by (service) (increase(",
     "unless on () (sum(increase(", "jobs.yml"),
    ("progress matched to no service", "unless on (service) (sum by (service) (increase(", "unless on (service) (sum(increase(", "jobs.yml"),
    ("the schedulers' items in flight not summed", "sum by (service) (geomesh_work_items_in_flight)",
     "max by (service) (geomesh_work_items_in_flight)", "jobs.yml"),
    ("work items finished summed over services", "sum by (service, outcome) (rate(geomesh_work_items_finished_total[5m]))",
     "sum by (outcome) (rate(geomesh_work_items_finished_total[5m]))", "jobs.yml"),
    ("canceled jobs counted as failed", 'increase1h{status="failed"}', 'increase1h{status=~"failed|canceled"}', "jobs.yml"),
    ("a handful of jobs enough to alert", "}) >= 5", "}) >= 1", "jobs.yml"),
    ("a missing family not noticed", 'or absent(geomesh_transformer_workers{family="swath"})', "", "capacity.yml"),
    ("the schedulers' free staging summed", "geomesh_staging_free_bytes < 10", "sum by (backend) (geomesh_staging_free_bytes) < 10",
     "capacity.yml"),
    ("GB taken for GiB", "geomesh_staging_free_bytes < 10 * 1024 * 1024 * 1024", "geomesh_staging_free_bytes < 10 * 1000 * 1000 * 1000",
     "capacity.yml"),
    ("the job store down for one scheduler", 'max(geomesh_dependency_up{job="scheduler"', 'min(geomesh_dependency_up{job="scheduler"', "capacity.yml"),
    ("no scheduler up not noticed", "absent(up{job=\"scheduler\"} == 1)", "max(up{job=\"scheduler\"}) == 0", "capacity.yml"),
    ("too_large counted as load", 'reason=~"queue_full|scratch_full"', 'reason=~"queue_full|scratch_full|too_large"', "capacity.yml"),
]


def _mutated(what: str, text: str, replacement: str, unit_test: str, folder: Path) -> str:
    """What is wrong with rules.yml mutated (its unit test passing, or the mutation broken); "" if caught."""
    rules = RULES.read_text()
    if rules.count(text) != 1:
        return f"{text!r} is not once in rules.yml: update this mutation"
    folder.mkdir()
    (folder / "rules.yml").write_text(rules.replace(text, replacement))
    if promtool("check", "rules", folder / "rules.yml").returncode != 0:
        return f"{what}: the mutation itself is invalid"
    (folder / "tests").mkdir()
    shutil.copy(PROMETHEUS_DIR / "tests" / unit_test, folder / "tests" / unit_test)
    tested = promtool("test", "rules", f"tests/{unit_test}", cwd=folder)
    if tested.returncode == 0 or "FAILED" not in tested.stdout + tested.stderr:
        return f"tests/{unit_test} passes with rules.yml's {what}"
    return ""


@pytest.fixture(scope="module")
def mutated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every mutation's outcome, run side by side (promtool evaluates hours of series for each)."""
    folder = tmp_path_factory.mktemp("mutations")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        outcomes = {
            what: pool.submit(_mutated, what, text, replacement, unit_test, folder / str(number))
            for number, (what, text, replacement, unit_test) in enumerate(MUTATIONS)
        }
        return {what: outcome.result() for what, outcome in outcomes.items()}


@NEEDS_PROMTOOL
@pytest.mark.parametrize("what", [what for what, *_ in MUTATIONS])
def test_the_unit_tests_catch(what: str, mutated: dict[str, str]) -> None:
    assert mutated[what] == ""


@NEEDS_PROMTOOL
def test_a_mutation_the_unit_tests_miss_is_reported(tmp_path: Path) -> None:
    comment = "# geomesh's recording rules and alerts"
    assert "passes with" in _mutated("comment", comment, "# geomesh's rules", "errors.yml", tmp_path / "comment")
    assert "not once" in _mutated("absent", "no such text", "", "errors.yml", tmp_path / "absent")
    assert "invalid" in _mutated("broken", "max by (service)", "max by (service", "jobs.yml", tmp_path / "broken")


# --- Names, labels and values -------------------------------------------------------------------


@pytest.fixture(scope="module")
def words() -> Vocabulary:
    return vocabulary()


@pytest.mark.parametrize("source", [rule_queries, unit_test_queries, dashboard_queries])
def test_every_metric_label_and_value_exists(source: Any, words: Vocabulary) -> None:
    queries = source()
    assert queries
    found = [f"{where}: {problem}" for where, expr in queries for problem in problems(expr, words)]
    assert not found, "\n".join(found)


def test_the_unit_tests_series_carry_every_label() -> None:
    """Each input series of a geomesh metric has all its labels and a target's: a series missing one
    (say, work items finished without their service) is one no process exports."""
    defined, wrong, checked = defined_series(), [], 0
    for where, series in unit_test_series():
        (selector,) = parse(series).selectors
        wanted = defined.get(selector.name or "", frozenset()) | TARGET_LABELS
        labels = {label for label, _, _ in selector.matchers}
        if labels != wanted:
            wrong.append(f"{where}: {series}: {', '.join(sorted(wanted - labels)) or 'no label'} missing, "
                         f"{', '.join(sorted(labels - wanted)) or 'none'} more")
        checked += selector.name in defined
    assert not wrong, "\n".join(wrong)
    assert checked


def test_recording_rules_keep_the_labels_their_level_names() -> None:
    """`route:...` sums by route, `service_method_le:...` by service, method and le, `mesh:...` by
    nothing. (Rules built of other recorded series are checked on real series by the Prometheus test.)"""
    checked = 0
    for rule in recording_rules():
        level, expr = level_labels(rule["record"]), rule["expr"]
        outer = re.fullmatch(r"\s*(histogram_quantile\([\d.]+,\s*)?(?:sum|max|min|avg|count) by \(([\w, ]+)\) \(.*", expr, re.S)
        if outer:
            kept = {label.strip() for label in outer[2].split(",")}
            assert kept == (level | {"le"} if outer[1] else level), rule["record"]
            checked += 1
    assert checked >= len(recording_rules()) // 2


def test_the_lexer_reads_what_rules_write() -> None:
    query = parse(
        'max by (family) (label_replace(up{job=~"transformer-.+"}, "family", "$1", "job", "transformer-(.+)")) == 0'
        ' or sum without (pod) (rate(geomesh_http_requests_total{route="/jobs",status!~"5..|4.."}[$__rate_interval] offset 5m))'
        ' / on (route) group_left (method) x:y:z and bool 1e3 > 0x10'
    )
    assert query.selectors == [
        Selector("up", (("job", "=~", "transformer-.+"),)),
        Selector("geomesh_http_requests_total", (("route", "=", "/jobs"), ("status", "!~", "5..|4.."))),
        Selector("x:y:z", ()),
    ]
    assert query.grouping == {"family", "pod", "route", "method"}
    assert (query.made, query.read) == ({"family"}, {"job"})
    for broken in ('geomesh_jobs{status="running"', "sum(geomesh_jobs", 'geomesh_jobs{status}', "geomesh_jobs ? 1"):
        with pytest.raises(ValueError):
            parse(broken)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(rate(geomesh_http_request_total[5m]))", "no such metric"),
        ("geomesh_jobs_total", "no such metric"),  # a gauge has no _total
        ("geomesh_grpc_server_handled", "no such metric"),  # a counter is exposed as _total
        ("geomesh_build", "no such metric"),  # an info as _info
        ("rate(geomesh_http_requests_total{code=\"500\"}[5m])", "has no label 'code'"),
        ("geomesh_jobs{le=\"1\"}", "has no label 'le'"),
        ("geomesh_work_items_queued{status=\"running\"}", "has no label 'status'"),
        ("sum by (family) (rate(geomesh_http_requests_total[5m]))", "has the label 'family'"),
        ("geomesh_work_items_finished_total{outcome=\"success\"}", "outcome is one of"),
        ("geomesh_transformer_workers{pool=~\"light|medium\"}", "pool is one of"),
        ("geomesh_jobs{status=\"completed\"}", "status is one of"),
        ("geomesh_grpc_server_handled_total{code!~\"OK|CANCELED\"}", "code is one of"),
        ("geomesh_http_requests_total{status=\"5xx\"}", "not an HTTP status"),
        ("up{job=\"transformer-hdf\"}", "job is one of"),
        ("up{job=~\"edge|transformer-(gdal|hdf)\"}", "job is one of"),
        ("route:geomesh_http_requests:rate5m{status=\"500\"}", "has no label 'status'"),
        ("status:geomesh_jobs:max{status=\"done\"}", "status is one of"),
        ("route:geomesh_http_requests:rate1h", "no such metric"),
        ("label_replace(geomesh_jobs, \"x\", \"$1\", \"family\", \"(.*)\")", "has the label 'family'"),
        ("{__name__=~\"geomesh_.+\"}", "without a metric name"),
        ("vector(1)", "selects no series"),
    ],
)
def test_unknown_metrics_labels_and_values_are_caught(expr: str, problem: str, words: Vocabulary) -> None:
    found = problems(expr, words)
    assert any(problem in text for text in found), found


@pytest.mark.parametrize(
    "expr",
    [
        'histogram_quantile(0.95, sum by (le, route) (rate(geomesh_http_request_seconds_bucket{route=~"$route"}[5m])))',
        'geomesh_build_info{version!="", job="edge", namespace=~"$namespace"}',
        'max by (family) (label_replace(up{job=~"transformer-.+"}, "family", "$1", "job", "transformer-(.+)"))',
        'sum by (status) (rate(geomesh_http_requests_total{status=~"5..|499"}[5m]))',
        'geomesh_dependency_up{dependency="job_store"} == 0',
        'status:geomesh_jobs:max{status=~"failed|canceled"}',
    ],
)
def test_what_exists_is_accepted(expr: str, words: Vocabulary) -> None:
    assert problems(expr, words) == []


def test_the_dashboard_is_grafanas() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    uses = [panel["datasource"] for panel in panels] + [t["datasource"] for p in panels for t in p["targets"]]
    uses += [variable["datasource"] for variable in variables.values() if variable["type"] == "query"]
    assert all(use == {"type": "prometheus", "uid": "${datasource}"} for use in uses), "a hard-coded datasource"
    text = json.dumps(dashboard)
    for wanted in ("geomesh_http_requests_total", "geomesh_grpc_server_handled_total", "geomesh_http_request_seconds_bucket",
                   "geomesh_grpc_server_handling_seconds_bucket", "geomesh_work_items_queued", "geomesh_work_items_finished_total",
                   "geomesh_work_items_in_flight", "geomesh_work_item_seconds_bucket",
                   "geomesh_jobs{", "geomesh_http_requests_in_flight", "geomesh_transformer_workers_busy",
                   "geomesh_transformer_workers{", "geomesh_transformer_queued", "geomesh_transformer_refused_total",
                   "geomesh_db_connections", "geomesh_staging_free_bytes", "geomesh_build_info"):
        assert wanted in text, f"the dashboard shows no {wanted}"
    for panel in panels:  # each panel inside the 24-column grid, none overlapping another
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24 and panel["targets"], panel["title"]
    cells = [(p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy) for p in dashboard["panels"]
             for dx in range(p["gridPos"]["w"]) for dy in range(p["gridPos"]["h"])]
    assert len(cells) == len(set(cells)), "panels overlap"


# --- A real mesh, scraped ---------------------------------------------------------------------------

JOB_GRANULES = 6


@dataclass
class RealMesh:
    edge: str  # http://127.0.0.1:PORT
    metrics: dict[str, str]  # component -> its /metrics URL
    pids: dict[str, int]  # component -> its process
    queued_seen: dict[str, float] = field(default_factory=dict)  # work items queued, by service, while gdal was stopped
    at_start: list[Sample] = field(default_factory=list)  # the scheduler's metrics before any request
    job_id: str = ""


def _children(pid: int) -> dict[str, int]:
    """`geomesh up`'s services by component, from /proc (their command line and environment)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            environment = dict(
                line.split("=", 1) for line in Path(f"/proc/{child}/environ").read_bytes().decode().split("\0") if "=" in line
            )
            service = command[command.index(b"serve") + 1].decode()
            found[f"transformer-{environment['GEOMESH_TRANSFORMER_FAMILY']}" if service == "transformer" else service] = int(child)
    return found


def scrape(url: str) -> list[Sample]:
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200, f"{url}: {answer.status_code}"
    return [sample for family in text_string_to_metric_families(answer.text) for sample in family.samples]


def samples(scraped: Iterable[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in scraped if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


@pytest.fixture(scope="module")
def real_mesh(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealMesh]:
    """`geomesh up` on the demo data, its jobs and outputs kept out of demo_dir; one dispatch slot,
    so a job's items wait in the queue while the one in flight waits for its transformer."""
    with geomesh_up(demo_dir, tmp_path_factory.mktemp("prometheus-mesh"), GEOMESH_SCHEDULER_DISPATCH_SLOTS="1") as up:
        logged = up.log.read_text(errors="replace")
        # Each gRPC service logs its metrics port: "scheduler listening on 127.0.0.1:50051 (metrics: 9155)".
        ports_by_name = dict(re.findall(r"([\w-]+) listening on \S+ \(metrics: (\d+)\)", logged))
        urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports_by_name.items()} | {"edge": f"{up.edge}/metrics"}
        assert set(urls) == set(COMPONENTS), logged[-3000:]
        yield RealMesh(up.edge, urls, _children(up.process.pid))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", f"{expr}: {answer}"
        return list(answer["data"]["result"])


def _pod(component: str, address: str, **meta: str) -> dict[str, Any]:
    """A target as Kubernetes discovery gives one (the labels prometheus.yml's relabelings read)."""
    labels = {
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "geomesh",
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": component,
        "__meta_kubernetes_pod_container_port_name": "metrics",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_namespace": "geomesh-test",
        "__meta_kubernetes_pod_name": f"{component}-0",
    }
    return {"targets": [address], "labels": labels | {f"__meta_kubernetes_{key}": value for key, value in meta.items()}}


@pytest.fixture(scope="module")
def prometheus(real_mesh: RealMesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus | None]:
    """A real Prometheus scraping the mesh every second with prometheus.yml's relabelings and
    evaluating rules.yml; None where the prometheus server is not installed (the direct scrapes still run)."""
    if PROMETHEUS is None:
        yield None
        return
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(CONFIG.read_text())
    addresses = {name: url.removeprefix("http://").removesuffix("/metrics") for name, url in real_mesh.metrics.items()}
    targets = [_pod(name, address) for name, address in addresses.items()] + [
        # What the relabelings must drop: a gRPC port, a pod not running, another application's pod.
        _pod("scheduler", addresses["catalog"], pod_container_port_name="grpc"),
        _pod("catalog", addresses["catalog"], pod_phase="Pending", pod_name="catalog-1"),
        _pod("edge", addresses["edge"], pod_label_app_kubernetes_io_name="other"),
    ]
    (work / "targets.json").write_text(json.dumps(targets))
    (scrape_config,) = config["scrape_configs"]
    del scrape_config["kubernetes_sd_configs"]
    scrape_config["file_sd_configs"] = [{"files": [str(work / "targets.json")]}]
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{_free_port()}"
    with open(work / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--web.listen-address={address}",
             f"--storage.tsdb.path={work / 'data'}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    running = Prometheus(f"http://{address}", process)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, (work / "prometheus.log").read_text()[-3000:]
            try:  # /-/ready: 503 (not JSON) while its storage starts; then every target up
                ready = requests.get(f"{running.url}/-/ready", timeout=10).status_code == 200
                if ready and len(running.query("up == 1")) == len(COMPONENTS):
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def traffic(real_mesh: RealMesh, prometheus: Prometheus | None) -> RealMesh:
    """With Prometheus watching: synchronous requests, callers' mistakes, and an asynchronous job of
    JOB_GRANULES granules followed to its end."""
    # Before any request: within the scheduler's first rounds of gauges (every 2 s), every registry
    # service's queue reported (test_each_service_exports_what_the_rules_read checks the rest).
    deadline = time.monotonic() + 15
    while not REGISTRY_SERVICES <= (reported := {s.labels["service"] for s in samples(real_mesh.at_start, "geomesh_work_items_queued")}):
        assert time.monotonic() < deadline, f"the scheduler reports the queues of {sorted(reported)} only"
        time.sleep(0.2)
        real_mesh.at_start = scrape(real_mesh.metrics["scheduler"])
    rangeset = f"{real_mesh.edge}/{HARMONY_EXAMPLE}/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset"
    for _ in range(3):  # more than once, scrapes apart: a counter's first sample is no increase to rate()
        answer = requests.get(rangeset, params={"granuleId": GLOBAL_GRANULE}, timeout=60)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("image/tiff"), answer.text[:500]
        time.sleep(1.2)
    purple = rangeset.replace("/all/", "/purple_var/")
    assert requests.get(purple, params={"granuleId": GLOBAL_GRANULE}, timeout=30).status_code in (400, 404)
    assert requests.get(f"{real_mesh.edge}/no/such/page", timeout=30).status_code == 404
    # The gdal transformer stopped while the job is submitted: its items wait in the queue (the
    # scheduler's gauges refresh every 2 s) until it goes on, then all succeed.
    gdal = real_mesh.pids["transformer-gdal"]
    os.kill(gdal, signal.SIGSTOP)
    try:
        answer = requests.get(rangeset, params={"maxResults": str(JOB_GRANULES), "forceAsync": "true"}, allow_redirects=False, timeout=60)
        assert answer.status_code == 303, answer.text[:500]
        real_mesh.job_id = answer.headers["Location"].rsplit("/", 1)[1]
        deadline = time.monotonic() + 15
        while not real_mesh.queued_seen.get("harmony/gdal"):
            assert time.monotonic() < deadline, f"the scheduler reports no work item queued: {real_mesh.queued_seen}"
            for sample in samples(scrape(real_mesh.metrics["scheduler"]), "geomesh_work_items_queued"):
                real_mesh.queued_seen[sample.labels["service"]] = sample.value
            time.sleep(0.2)
    finally:
        os.kill(gdal, signal.SIGCONT)
    deadline = time.monotonic() + 120
    while requests.get(f"{real_mesh.edge}/jobs/{real_mesh.job_id}", timeout=30).json()["status"] != "successful":
        assert time.monotonic() < deadline, f"job {real_mesh.job_id} did not finish"
        time.sleep(0.2)
    # The job's queue, empty now, reported as 0 (not its last count) within the gauges' 2 s refresh.
    deadline = time.monotonic() + 10
    while any(s.value for s in samples(scrape(real_mesh.metrics["scheduler"]), "geomesh_work_items_queued")):
        assert time.monotonic() < deadline, "the scheduler still reports queued work items"
        time.sleep(0.2)
    if prometheus is not None:
        time.sleep(3)  # three scrapes and evaluations after the last request
    return real_mesh


def test_each_service_exports_what_the_rules_read(traffic: RealMesh) -> None:
    scraped = {name: scrape(url) for name, url in traffic.metrics.items()}
    for name, found in scraped.items():
        assert [s.labels for s in samples(found, "geomesh_build_info")] == [{"version": metrics.VERSION}], name
        assert metrics.VERSION != "unknown"
        # Every process is its own registry: its gRPC server metrics name it alone.
        services = {s.labels["service"] for s in found if s.name.startswith("geomesh_grpc_server_")}
        assert services <= ({name} if name in GRPC_SERVICES else set()), name
        assert services or name in ("edge", "transformer-netcdf", "transformer-swath"), f"{name} counted no call"
        for sample in found:  # each known label's values are the ones the rules' check knows
            for label, value in sample.labels.items():
                known = KNOWN_VALUES.get((sample.name, label))
                assert known is None or value in known, f"{name}: {sample.name}{{{label}={value!r}}}"

    edge = scraped["edge"]
    route = "/{collectionId}/ogc-api-coverages/1.0.0/collections/{variable}/coverage/rangeset"
    statuses = {s.labels["status"]: s.value for s in samples(edge, "geomesh_http_requests_total", route=route, method="GET")}
    assert statuses.get("200", 0) >= 1 and statuses.get("303", 0) >= 1, statuses  # the job's submission: 303, not 500
    assert not any(status.startswith("5") for status in statuses), statuses
    assert set(statuses) - {"200", "303"}, "the unknown variable's 4xx is not counted"
    assert samples(edge, "geomesh_http_requests_total", route="unmatched", status="404")
    everything = {s.labels["status"] for s in samples(edge, "geomesh_http_requests_total")}
    assert all(HTTP_STATUS.fullmatch(status) for status in everything) and "500" not in everything, everything
    assert samples(edge, "geomesh_http_request_seconds_count", route=route, method="GET")[0].value >= 3
    assert samples(edge, "geomesh_http_request_seconds_bucket", route=route, method="GET", le="+Inf")
    # In flight, by route: each route answered has its series (0 now), named as the requests' counter names it.
    in_flight = {s.labels["route"]: s.value for s in samples(edge, "geomesh_http_requests_in_flight")}
    routes = {s.labels["route"] for s in samples(edge, "geomesh_http_requests_total")}
    assert {route, "unmatched", "/jobs/{jobID}"} <= set(in_flight) <= routes, (in_flight, routes)
    assert set(in_flight.values()) == {0}, in_flight
    assert samples(edge, "geomesh_grpc_client_calls_total", peer="scheduler", method="Execute", code="OK")[0].value >= 2

    scheduler = scraped["scheduler"]
    executes = {s.labels["code"]: s.value for s in samples(scheduler, "geomesh_grpc_server_handled_total", method="Execute")}
    assert executes.get("OK", 0) >= 2 and "CANCELLED" not in executes, executes
    assert samples(scheduler, "geomesh_grpc_server_handling_seconds_bucket", service="scheduler", method="Execute", le="+Inf")
    jobs = {s.labels["status"]: s.value for s in samples(scheduler, "geomesh_jobs")}
    assert set(jobs) == {status.value for status in JobStatus} and jobs["successful"] >= 1, jobs
    assert traffic.queued_seen.get("harmony/gdal", 0) >= 1, f"no work item seen queued: {traffic.queued_seen}"
    # Every registry service's queue and every service's and outcome's work items finished: there
    # from the scheduler's start (traffic's first look), 0 then; now only harmony/gdal's job counted.
    start = {s.labels["service"]: s.value for s in samples(traffic.at_start, "geomesh_work_items_queued")}
    assert start == dict.fromkeys(REGISTRY_SERVICES, 0), start
    outcomes = KNOWN_VALUES[("geomesh_work_items_finished_total", "outcome")]
    assert set(metrics.WORK_ITEM_OUTCOMES) == outcomes
    start = {(s.labels["service"], s.labels["outcome"]): s.value for s in samples(traffic.at_start, "geomesh_work_items_finished_total")}
    assert start == {(service, outcome): 0 for service in REGISTRY_SERVICES for outcome in outcomes}, start
    queued = {s.labels["service"]: s.value for s in samples(scheduler, "geomesh_work_items_queued")}
    assert queued == dict.fromkeys(REGISTRY_SERVICES, 0), queued
    finished = {(s.labels["service"], s.labels["outcome"]): s.value for s in samples(scheduler, "geomesh_work_items_finished_total")}
    assert set(finished) == {(service, outcome) for service in REGISTRY_SERVICES for outcome in outcomes}, finished
    assert finished["harmony/gdal", "successful"] >= JOB_GRANULES, finished
    assert not any(value for (service, _), value in finished.items() if service != "harmony/gdal"), finished
    durations = {s.labels["service"]: s.value for s in samples(scheduler, "geomesh_work_item_seconds_count")}
    assert set(durations) == {"harmony/gdal"} and durations["harmony/gdal"] >= JOB_GRANULES, durations
    assert samples(scheduler, "geomesh_work_item_seconds_bucket", service="harmony/gdal", le="+Inf")
    in_flight = {s.labels["service"]: s.value for s in samples(scheduler, "geomesh_work_items_in_flight")}
    assert in_flight == {"harmony/gdal": 0}, in_flight
    assert [s.value for s in samples(scheduler, "geomesh_dependency_up", dependency="job_store")] == [1]
    connections = {s.labels["state"]: s.value for s in samples(scheduler, "geomesh_db_connections")}
    assert set(connections) == {"in_use", "idle"} and sum(connections.values()) >= 1, connections
    free = samples(scheduler, "geomesh_staging_free_bytes")
    assert [s.labels for s in free] == [{"backend": "file"}] and free[0].value > 0, free  # a local folder's
    assert samples(scheduler, "geomesh_staging_bytes_total", backend="file")[0].value > 0
    assert samples(scheduler, "geomesh_grpc_client_calls_total", peer="transformer", method="Transform", code="OK")

    catalog = {s.labels["method"] for s in samples(scraped["catalog"], "geomesh_grpc_server_handled_total", code="OK")}
    assert {"SearchGranules", "MatchService"} <= catalog, catalog

    for family in TRANSFORMER_FAMILIES:
        found = scraped[f"transformer-{family}"]
        workers = {s.labels["pool"]: s.value for s in samples(found, "geomesh_transformer_workers", family=family)}
        assert set(workers) == {"light", "heavy"} and all(workers.values()), workers
        busy = {s.labels["pool"]: s.value for s in samples(found, "geomesh_transformer_workers_busy", family=family)}
        assert set(busy) == set(workers) and all(busy[pool] <= workers[pool] for pool in busy), busy
        assert {s.labels["pool"] for s in samples(found, "geomesh_transformer_queued", family=family)} == set(workers)
        other = {s.labels["family"] for s in found if s.name.startswith("geomesh_transformer_")}
        assert other == {family}, f"transformer-{family} reports {other}"
    gdal = scraped["transformer-gdal"]
    assert samples(gdal, "geomesh_grpc_server_handled_total", service="transformer-gdal", method="Transform", code="OK")[0].value >= 2
    assert samples(gdal, "geomesh_output_bytes_total", service="transformer-gdal")[0].value > 0


# What only one kind of process does, only that process exports: no other reports it (as 0: a
# labelled metric has no series until its process sets one), and each of its owners does, after
# the traffic. rules.yml and the dashboard rely on it (no job="scheduler" to tell a scheduler's
# staging from the edge's stray 0).
TRANSFORMERS = {f"transformer-{family}" for family in TRANSFORMER_FAMILIES}
OWNERS = {
    "geomesh_staging_free_bytes": {"scheduler"},  # a local folder's: the mesh stages on one
    "geomesh_staging_bytes_total": {"scheduler"},
    "geomesh_work_items_queued": {"scheduler"},
    "geomesh_work_items_in_flight": {"scheduler"},
    "geomesh_work_items_finished_total": {"scheduler"},
    "geomesh_work_item_seconds_count": {"scheduler"},
    "geomesh_jobs": {"scheduler"},
    "geomesh_db_connections": {"scheduler"},
    "geomesh_dependency_up": {"scheduler"},
    "geomesh_http_requests_in_flight": {"edge"},
    "geomesh_http_requests_total": {"edge"},
    "geomesh_http_request_seconds_count": {"edge"},
    **{name: TRANSFORMERS for name in ("geomesh_transformer_workers", "geomesh_transformer_workers_busy",
                                       "geomesh_transformer_queued", "geomesh_output_bytes_total")},
}


def test_only_their_own_process_exports_a_services_gauges(traffic: RealMesh) -> None:
    exported = {name: {s.name for s in scrape(url)} for name, url in traffic.metrics.items()}
    assert set(exported) == set(COMPONENTS)
    by = {metric: {name for name, names in exported.items() if metric in names} for metric in OWNERS}
    assert by == OWNERS, {metric: exporters for metric, exporters in by.items() if exporters != OWNERS[metric]}


def _wait_for(prometheus: Prometheus, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not (found := prometheus.query(expr)):
        assert time.monotonic() < deadline, f"nothing for {expr} in {timeout:.0f} s"
        time.sleep(0.5)
    return found


def test_prometheus_scrapes_and_evaluates_the_mesh(traffic: RealMesh, prometheus: Prometheus | None) -> None:
    if prometheus is None:
        pytest.skip("the prometheus server is not installed (Debian's `prometheus` package; .ci/run installs it)")
    targets = requests.get(f"{prometheus.url}/api/v1/targets", timeout=10).json()["data"]
    active = [target["labels"] for target in targets["activeTargets"]]
    assert sorted(labels["job"] for labels in active) == sorted(COMPONENTS), active  # the decoys dropped
    assert all(labels["namespace"] == "geomesh-test" and labels["pod"] == f"{labels['job']}-0" for labels in active)
    assert len(targets["droppedTargets"]) == 3
    assert {result["metric"]["job"] for result in prometheus.query("up == 1")} == set(COMPONENTS)

    # Every recorded series carries exactly the labels its level names, and the traffic shows in them.
    may_be_empty = {"route:geomesh_http_errors:rate5m", "service_method:geomesh_grpc_server_errors:rate5m"}
    for rule in recording_rules():
        found = prometheus.query(rule["record"])
        assert found or rule["record"] in may_be_empty, f"{rule['record']}: no series"
        for result in found:
            assert set(result["metric"]) - {"__name__"} == level_labels(rule["record"]), result
    ratios = prometheus.query("route:geomesh_http_errors:ratio_rate5m")
    route = "/{collectionId}/ogc-api-coverages/1.0.0/collections/{variable}/coverage/rangeset"
    assert route in {result["metric"]["route"] for result in ratios}
    assert all(float(result["value"][1]) == 0 for result in ratios), ratios  # 4xx and 303s are not errors
    assert all(float(r["value"][1]) == 0 for r in prometheus.query("service_method:geomesh_grpc_server_errors:ratio_rate5m"))
    assert prometheus.query('service_method:geomesh_grpc_server_handled:rate5m{service="scheduler",method="Execute"} > 0')
    assert float(prometheus.query('status:geomesh_jobs_finished:increase1h{status="successful"}')[0]["value"][1]) > 0
    queued = {r["metric"]["service"]: float(r["value"][1]) for r in prometheus.query("service:geomesh_work_items_queued:max")}
    assert queued == dict.fromkeys(REGISTRY_SERVICES, 0), queued
    assert prometheus.query('service_outcome:geomesh_work_items_finished:rate5m{service="harmony/gdal",outcome="successful"} > 0')
    assert not prometheus.query('service_outcome:geomesh_work_items_finished:rate5m{service!="harmony/gdal"} > 0')
    assert [r["metric"]["service"] for r in prometheus.query("service:geomesh_work_item_seconds:p95_5m")] == ["harmony/gdal"]
    assert [r["metric"]["service"] for r in prometheus.query("service:geomesh_work_items_in_flight:sum")] == ["harmony/gdal"]

    # A healthy mesh: no alert firing, nor even pending.
    assert prometheus.query("ALERTS") == []

    # The swath transformer stopped: its target down, its family without workers.
    pid = traffic.pids["transformer-swath"]
    os.kill(pid, signal.SIGSTOP)
    try:
        pending = _wait_for(prometheus, 'ALERTS{alertname="GeomeshNoReadyTransformer"}')
        assert [(a["metric"]["family"], a["metric"]["alertstate"]) for a in pending] == [("swath", "pending")]
        down = _wait_for(prometheus, 'ALERTS{alertname="GeomeshTargetDown"}')
        assert [a["metric"]["job"] for a in down] == ["transformer-swath"]
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait_for(prometheus, 'up{job="transformer-swath"} == 1')
    deadline = time.monotonic() + 30
    while prometheus.query("ALERTS"):
        assert time.monotonic() < deadline, prometheus.query("ALERTS")
        time.sleep(0.5)


def test_every_dashboard_query_runs_on_the_mesh(traffic: RealMesh, prometheus: Prometheus | None) -> None:
    """Each panel's query is valid PromQL to Prometheus and, but for the error panels of a healthy
    mesh, shows data; each variable lists values."""
    if prometheus is None:
        pytest.skip("the prometheus server is not installed (Debian's `prometheus` package; .ci/run installs it)")
    quiet = {"Server errors (5xx)", "Server error ratio", "Server errors", "Client calls failing", "Transformer refusals"}
    substitutions = {
        "$__rate_interval": "1m", "$namespace": ".*", "$route": ".*", "$service": ".*", "$registry_service": ".*", "$family": ".*",
    }
    dashboard = json.loads(DASHBOARD.read_text())
    empty = []
    for panel in (panel for panel in dashboard["panels"] if panel["type"] != "row"):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, expr
            if not prometheus.query(expr) and panel["title"] not in quiet:
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert match
            selector = match[1].replace("$namespace", ".*")
            answer = requests.get(f"{prometheus.url}/api/v1/label/{match[2]}/values", params={"match[]": selector}, timeout=10)
            assert answer.json()["data"], f"variable {variable['name']} lists nothing"
