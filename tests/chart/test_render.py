"""Lints and renders the chart with Helm v4's own SDK and checks what the objects promise."""

import json
import re

import helm_python
import kubernetes_validate
import pytest
import yaml
from conftest import ALL_ON, CHART, NAMESPACE, RELEASE, ROOT, VALUE_SETS, by_kind, notes, render

LINT_VERSIONS = ["v1.30.0", f"v{kubernetes_validate.latest_version()}"]


@pytest.mark.parametrize("kube_version", LINT_VERSIONS)
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_is_clean_in_strict_mode(value_set, kube_version):
    report = helm_python.lint(str(CHART), VALUE_SETS[value_set], strict=True, kube_version=kube_version)
    assert report["errors"] == []
    # Severity 1 is "info" (e.g. "icon is recommended"); warnings and errors must not appear.
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


@pytest.mark.parametrize(
    "bad",
    [
        {"logFormat": "xml"},
        {"replicaCount": 0},
        {"metrics": {"port": 70000}},
        {"watchNamespace": "Not_A_Namespace"},
        {"prometheusRule": {"enabled": True, "typo": 1}},
        {"unknownTopLevel": True},
    ],
)
def test_schema_rejects_bad_values(bad):
    with helm_python.Chart.load(str(CHART)) as chart:
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(bad)
    report = helm_python.lint(str(CHART), bad, strict=True)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"])


def test_chart_crd_is_the_repo_crd():
    repo = (ROOT / "crds" / "kvcluster.yaml").read_text()
    with helm_python.Chart.load(str(CHART)) as chart:
        crds = chart.crds
    assert [c["name"] for c in crds] == ["crds/kvcluster.yaml"]
    assert crds[0]["data"] == repo, "charts/raftkv-operator/crds/kvcluster.yaml differs from crds/kvcluster.yaml"


def test_defaults_render_only_the_core_objects():
    kinds = sorted(o["kind"] for o in render({}))
    assert kinds == sorted(
        ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
    )


def test_all_on_renders_the_optional_objects():
    kinds = {o["kind"] for o in render(ALL_ON)}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    # A watched namespace narrows the operator's rules to a Role there.
    assert "ClusterRole" not in kinds


def test_deployment_runs_the_operator_hardened(values):
    [deploy] = by_kind(render(values), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["args"][0] == "run"
    port = values.get("metrics", {}).get("port", 8080)
    assert f"--http-addr=0.0.0.0:{port}" in c["args"]
    assert c["ports"] == [{"name": "http-metrics", "containerPort": port, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    # The selector must select the pod template.
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_watch_namespace_reaches_the_operator():
    [deploy] = by_kind(render(ALL_ON), "Deployment")
    assert "--watch-namespace=apps" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    [deploy] = by_kind(render({}), "Deployment")
    assert not any(a.startswith("--watch-namespace") for a in deploy["spec"]["template"]["spec"]["containers"][0]["args"])


def test_image_tag_defaults_to_app_version():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    [deploy] = by_kind(render({}), "Deployment")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/raftkv/kv-operator:{meta['appVersion']}"
    [deploy] = by_kind(render(ALL_ON), "Deployment")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/kv-operator:v9"


def test_metrics_service_targets_the_operator_pods(values):
    objects = render(values)
    [svc] = by_kind(objects, "Service")
    [deploy] = by_kind(objects, "Deployment")
    assert svc["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http-metrics"


def test_service_monitor_selects_the_metrics_service():
    objects = render(ALL_ON)
    [svc] = by_kind(objects, "Service")
    [sm] = by_kind(objects, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert sm["metadata"]["labels"]["release"] == "prom"


def test_pod_monitor_selects_kvnode_pods_on_their_metrics_port():
    [pm] = by_kind(render(ALL_ON), "PodMonitor")
    # The labels and port name the operator puts on member pods (operator/src/names.rs, statefulset.rs).
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "kvnode",
        "app.kubernetes.io/managed-by": "kv-operator",
    }
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["apps"]}


def rules(values: dict) -> dict[str, dict]:
    [pr] = by_kind(render(values), "PrometheusRule")
    return {r["alert"]: r for g in pr["spec"]["groups"] for r in g["rules"]}


def test_prometheus_rule_alerts_cover_the_four_failures():
    alerts = rules(ALL_ON)
    assert set(alerts) == {"RaftkvNoLeader", "RaftkvFrequentLeaderChanges", "RaftkvSlowFsync", "RaftkvMemberDown"}
    assert "raftkv_server_has_leader" in alerts["RaftkvNoLeader"]["expr"]
    assert "raftkv_server_leader_changes_seen_total" in alerts["RaftkvFrequentLeaderChanges"]["expr"]
    assert "raftkv_disk_wal_fsync_duration_seconds_bucket" in alerts["RaftkvSlowFsync"]["expr"]
    assert alerts["RaftkvMemberDown"]["expr"] == 'up{job="kvnode"} == 0'
    for rule in alerts.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        # Prometheus templates survive Helm's own templating.
        assert "{{ $labels.instance }}" in rule["annotations"]["description"]


def test_prometheus_rule_thresholds_come_from_values():
    values = {"prometheusRule": {"enabled": True, "leaderChangesThreshold": 7, "fsyncSecondsThreshold": 0.25,
                                 "memberSelector": 'job="etcd-like"'}}
    alerts = rules(values)
    assert alerts["RaftkvFrequentLeaderChanges"]["expr"].endswith("> 7")
    assert alerts["RaftkvSlowFsync"]["expr"].endswith("> 0.25")
    assert alerts["RaftkvMemberDown"]["expr"] == 'up{job="etcd-like"} == 0'


def test_dashboard_is_valid_json_on_project_metrics():
    [cm] = by_kind(render(ALL_ON), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["raftkv.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs and all("raftkv_" in e for e in exprs)
    # Every metric the dashboard plots exists in kvnode's source.
    source = "\n".join(p.read_text() for p in (ROOT / "node" / "src").rglob("*.rs"))
    for name in {m for e in exprs for m in re.findall(r"raftkv_[a-z_]+", e)}:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert base in source, f"{name} is not a kvnode metric"


def test_notes_render_with_release_names():
    text = notes({})
    assert f"deployment/{RELEASE}-raftkv-operator" in text
    assert NAMESPACE in text
    assert "podMonitor.enabled=true" in text
    assert "podMonitor.enabled" not in notes(ALL_ON)
