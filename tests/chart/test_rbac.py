"""Every Kubernetes API call kv-operator makes is allowed by the chart's RBAC, and nothing more.

The calls are derived from the operator's source (operator/src/reconcile.rs, run.rs and
membership/secret_tls.rs); the rules the chart renders and binds to the operator's ServiceAccount must grant exactly those, and
the table in operator/README.md ("RBAC the operator needs") must document every one of them.
"""

import re

import pytest
from conftest import ALL_ON, NAMESPACE, ROOT, by_kind, render

OPERATOR = ROOT / "operator"

# Rust type -> (API group, resource) for the kinds the operator touches.
KINDS = {
    "KVCluster": ("raftkv.dev", "kvclusters"),
    "StatefulSet": ("apps", "statefulsets"),
    "Pod": ("", "pods"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Service": ("", "services"),
    "ConfigMap": ("", "configmaps"),
    "ServiceAccount": ("", "serviceaccounts"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "Secret": ("", "secrets"),
}
LEASES = ("coordination.k8s.io", "leases")
EVENTS = ("events.k8s.io", "events")


def production_source(name: str) -> str:
    """A source file without its `#[cfg(test)]` module (mocks there make no real calls)."""
    text = (OPERATOR / "src" / name).read_text()
    return text.split("#[cfg(test)]", 1)[0]


def calls_in_source() -> set[tuple[str, str, str]]:
    """(group, resource, verb) for every call visible in the operator's source."""
    calls: set[tuple[str, str, str]] = set()

    def add(kind: str, *verbs: str, sub: str = "") -> None:
        group, resource = KINDS[kind]
        calls.update((group, resource + sub, v) for v in verbs)

    for name in ("reconcile.rs", "run.rs", "membership/secret_tls.rs"):
        src = production_source(name)
        # Server-side apply is a PATCH that may create the object.
        for kind in re.findall(r"server_side_apply\(\s*&ns_api::<(\w+)>", src):
            add(kind, "patch", "create")
        for kind in re.findall(r"delete_ignoring_absent\(\s*&ns_api::<(\w+)>", src):
            add(kind, "delete")
        # Typed bindings `let x: Api<K> = ...` and the methods called on them.
        for binding in re.finditer(r"let (\w+): Api<(\w+)>\s*=", src):
            var, kind = binding.groups()
            # The binding's scope: up to the end of the enclosing top-level function.
            end = src.find("\n}\n", binding.end())
            scope = src[binding.end() : end if end != -1 else len(src)]
            for method in set(re.findall(rf"\b{var}\s*\.\s*(get|get_opt|list|patch|patch_status|delete|create|replace)\(", scope)):
                if method == "get_opt":
                    add(kind, "get")
                elif method == "patch_status":
                    add(kind, "patch", sub="/status")
                else:
                    add(kind, method)
            if re.search(rf"delete_ignoring_absent\(\s*&{var}\b", scope):
                add(kind, "delete")
            # kube's finalizer helper adds and removes the finalizer with JSON patches.
            if re.search(rf"finalizer\(\s*&{var}\b", scope):
                add(kind, "patch")
        # The controller's watched APIs: `let (a, b, c): (Api<K1>, Api<K2>, Api<K3>)`.
        for kinds in re.findall(r"let \([\w, ]+\): \(((?:Api<\w+>,?\s*)+)\)", src):
            for kind in re.findall(r"Api<(\w+)>", kinds):
                add(kind, "list", "watch")
        if "Recorder::new" in src:
            calls.update((*EVENTS, v) for v in ("create", "patch"))
        if "LeaseManagerBuilder::new" in src:
            # kube-lease-manager reads, creates and patches its Lease.
            calls.update((*LEASES, v) for v in ("get", "create", "patch"))
    return calls


def calls_in_readme() -> set[tuple[str, str, str]]:
    text = (OPERATOR / "README.md").read_text()
    section = text.split("## RBAC the operator needs", 1)[1].split("\n## ", 1)[0]
    calls = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        [group] = re.findall(r"`([^`]*)`", cells[0])
        group = "" if group == '""' else group  # the core group is written `""`
        resources = re.findall(r"`([^`]+)`", cells[1])
        verbs = [v.strip() for v in cells[2].split(",")]
        calls.update((group, r, v) for r in resources for v in verbs)
    return calls


def bound_rules(objects: list[dict], service_account: str) -> dict[tuple[str, str], list[dict]]:
    """Rules granted to the ServiceAccount, keyed by (role kind, role namespace or "")."""
    roles = {(r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"]): r
             for r in by_kind(objects, "Role") + by_kind(objects, "ClusterRole")}
    granted: dict[tuple[str, str], list[dict]] = {}
    for binding in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding"):
        subjects = binding["subjects"]
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account
                   and s["namespace"] == NAMESPACE for s in subjects):
            continue
        ref = binding["roleRef"]
        ns = binding["metadata"].get("namespace", "")
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"])]
        granted.setdefault((binding["kind"], ns), []).extend(role["rules"])
    return granted


def expand(rules: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {rule}"
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        out.update((g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"])
    return out


def test_readme_documents_every_call():
    source, readme = calls_in_source(), calls_in_readme()
    assert len(source) > 20
    assert source - readme == set(), "calls in operator/src missing from operator/README.md"


@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["cluster-wide", "watch-namespace"])
def test_chart_rbac_allows_exactly_the_operator_calls(values):
    objects = render(values)
    [deploy] = by_kind(objects, "Deployment")
    sa = deploy["spec"]["template"]["spec"]["serviceAccountName"]
    assert [s["metadata"]["name"] for s in by_kind(objects, "ServiceAccount")] == [sa]
    granted = bound_rules(objects, sa)
    watch_ns = values.get("watchNamespace", "")
    main_scope = ("RoleBinding", watch_ns) if watch_ns else ("ClusterRoleBinding", "")
    assert set(granted) == {main_scope, ("RoleBinding", NAMESPACE)}

    needed = calls_in_source()
    leases = {c for c in needed if c[:2] == LEASES}
    # Leases only in the operator's own namespace; everything else where KVClusters are watched.
    assert expand(granted[("RoleBinding", NAMESPACE)]) == leases
    assert expand(granted[main_scope]) == needed - leases


def test_a_missing_verb_would_be_caught():
    objects = render({})
    [role] = by_kind(objects, "ClusterRole")
    role["rules"][0]["verbs"].remove("watch")
    granted = bound_rules(objects, by_kind(objects, "ServiceAccount")[0]["metadata"]["name"])
    needed = calls_in_source()
    assert expand(granted[("ClusterRoleBinding", "")]) != needed - {c for c in needed if c[:2] == LEASES}
