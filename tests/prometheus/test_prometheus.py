"""A real Prometheus scrapes a real 3-member `kvnode dev` cluster.

Prometheus (Debian's package) scrapes every member with a job like the chart's PodMonitor
(job="kvnode") and loads the chart's PrometheusRule groups as its rule file. The test then asks
Prometheus's HTTP API: every member has a leader, exactly one is the leader, and write counters
move under load. `promtool check metrics` passes on every member's output and
`promtool check rules` on the rules.

Needs `prometheus`, `promtool`, `etcdctl` and a built kvnode (KVNODE_BIN, or
$CARGO_TARGET_DIR/debug/kvnode). Without them the test skips and says why, unless
RAFTKV_REQUIRE_PROMETHEUS=1 makes that a failure.
"""

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "chart"))
sys.path.insert(0, str(ROOT / "tests"))
from conftest import by_kind, render  # noqa: E402
from devcluster import dev_cluster, free_port, get, kvnode_binary  # noqa: E402
import devcluster  # noqa: E402


def require(what: str, ok: bool) -> None:
    if ok:
        return
    if os.environ.get("RAFTKV_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"{what} is missing and RAFTKV_REQUIRE_PROMETHEUS=1")
    pytest.skip(f"SKIPPED: {what} is missing")


def wait_for(what: str, check, deadline: float = devcluster.DEADLINE):
    """Polls `check` until it returns a truthy value; fails the test with `what` after `deadline` s."""
    try:
        return devcluster.wait_for(what, check, deadline)
    except devcluster.Timeout as e:
        pytest.fail(str(e))


class Prometheus:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict]:
        status, body = get(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if status != 200:
            return []
        data = json.loads(body)
        assert data["status"] == "success", data
        return data["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def rule_groups() -> dict:
    values = {"prometheusRule": {"enabled": True}}
    [rule] = by_kind(render(values), "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    binary = kvnode_binary()
    require("kvnode binary (build it or set KVNODE_BIN)", binary is not None and binary.exists())
    for tool in ("prometheus", "promtool", "etcdctl"):
        require(tool, shutil.which(tool) is not None)
    tmp = tmp_path_factory.mktemp("prom")
    with dev_cluster(binary, tmp) as (clients, metrics):
        rules = tmp / "rules.yaml"
        rules.write_text(yaml.safe_dump(rule_groups()))
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "kvnode", "metrics_path": "/metrics",
                                "static_configs": [{"targets": metrics}]}],
        }))
        port = free_port()
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"),
        )
        try:
            p = Prometheus(port)
            wait_for("3 targets up", lambda: p.scalar('count(up{job="kvnode"} == 1)') == 3)
            yield {"prometheus": p, "metrics": metrics, "clients": clients, "rules": rules}
        finally:
            prom.terminate()
            try:
                prom.wait(timeout=10)
            except subprocess.TimeoutExpired:
                prom.kill()


def test_every_member_has_a_leader_and_exactly_one_leads(cluster):
    p = cluster["prometheus"]
    has_leader = wait_for("has_leader from 3 members", lambda: (r := p.query("raftkv_server_has_leader")) and len(r) == 3 and r)
    assert sorted(r["metric"]["instance"] for r in has_leader) == sorted(cluster["metrics"])
    assert all(r["value"][1] == "1" for r in has_leader), has_leader
    leaders = p.query("raftkv_server_is_leader == 1")
    assert len(leaders) == 1, leaders
    assert p.scalar("sum(raftkv_server_is_leader)") == 1


def test_write_counters_move_under_load(cluster):
    p = cluster["prometheus"]
    expr = 'sum(raftkv_server_proposals_committed_total{job="kvnode"})'
    before = wait_for("committed proposals", lambda: p.scalar(expr) is not None and (p.scalar(expr),))[0]
    endpoints = ",".join(cluster["clients"])
    for i in range(20):
        subprocess.run(["etcdctl", f"--endpoints={endpoints}", "put", f"load-{i}", "x" * 100],
                       check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
    # Each write commits on all three members: the sum grows by at least 3 * 20.
    wait_for("committed proposals to grow", lambda: (p.scalar(expr) or 0) >= before + 60)
    wait_for("applied proposals to grow",
             lambda: (p.scalar('sum(increase(raftkv_server_proposals_applied_total[1m]))') or 0) > 0)


def test_promtool_accepts_every_members_metrics(cluster):
    for m in cluster["metrics"]:
        status, body = get(f"http://{m}/metrics")
        assert status == 200
        check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
        assert check.returncode == 0, f"{m}: {check.stdout.decode()}{check.stderr.decode()}"


def test_promtool_accepts_the_chart_rules(cluster):
    check = subprocess.run(["promtool", "check", "rules", str(cluster["rules"])], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "4 rules found" in check.stdout, check.stdout


def test_prometheus_evaluates_the_chart_alerts_without_firing(cluster):
    p = cluster["prometheus"]

    def loaded():
        status, body = get(f"{p.base}/api/v1/rules")
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]] if status == 200 else []
        return rules if len(rules) == 4 and all(r.get("lastEvaluation", "").startswith("2") and
                                               not r["lastEvaluation"].startswith("0001") for r in rules) else None

    rules = wait_for("the chart's rules to be evaluated", loaded)
    assert {r["name"] for r in rules} == {"RaftkvNoLeader", "RaftkvFrequentLeaderChanges", "RaftkvSlowFsync",
                                         "RaftkvMemberDown"}
    assert all(r["health"] == "ok" for r in rules), rules
    # A healthy cluster fires none of them.
    assert all(r["state"] == "inactive" for r in rules), rules
