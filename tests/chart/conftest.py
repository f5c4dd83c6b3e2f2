"""Shared helpers for the chart tests: rendering through Helm v4's SDK and parsing the output."""

from pathlib import Path

import helm_python
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "raftkv-operator"
RELEASE = "rk"
NAMESPACE = "raftkv-system"

# Every optional part switched on, plus non-default knobs, so each template branch renders.
ALL_ON = {
    "replicaCount": 2,
    "watchNamespace": "apps",
    "image": {"repository": "registry.example/kv-operator", "tag": "v9", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "serviceAccount": {"name": "custom-sa", "annotations": {"a": "b"}},
    "podAnnotations": {"x": "y"},
    "podLabels": {"team": "storage"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}]}}},
    "priorityClassName": "system-cluster-critical",
    "metrics": {
        "port": 9090,
        "service": {"annotations": {"s": "t"}},
        "serviceMonitor": {"enabled": True, "interval": "10s", "labels": {"release": "prom"}},
        "podMonitor": {"enabled": True, "labels": {"release": "prom"}},
    },
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
    "grafanaDashboard": {"enabled": True},
}

VALUE_SETS = {"defaults": {}, "all-on": ALL_ON}


def render(values: dict) -> list[dict]:
    """Renders the chart as `helm template` would and returns every object."""
    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(o for o in yaml.safe_load_all(text) if o)
    return objects


def notes(values: dict) -> str:
    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(params=sorted(VALUE_SETS), scope="module")
def values(request) -> dict:
    return VALUE_SETS[request.param]
