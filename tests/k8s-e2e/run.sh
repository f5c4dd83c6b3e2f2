#!/usr/bin/env bash
# End-to-end suite of kv-operator against a real Kubernetes cluster.
#
# Runs only when KUBECONFIG points at a reachable cluster; otherwise prints SKIPPED and exits 0.
# Installs the operator chart (charts/raftkv-operator), applies a KVCluster, writes and reads
# through the etcd API, scales 3 -> 5 -> 3 with `kubectl scale`, upgrades, deletes.
#
# Environment:
#   KUBECONFIG            kubeconfig of the target cluster (required to run)
#   E2E_NAMESPACE         namespace to use (default: raftkv-e2e-<random>)
#   E2E_IMAGE_REPO        kvnode image repository (default ghcr.io/raftkv/kvnode)
#   E2E_VERSION           initial kvnode version (default 0.1.0)
#   E2E_UPGRADE_VERSION   version to upgrade to (default: E2E_VERSION, i.e. a restart-only rollout)
#   E2E_OPERATOR_IMAGE    operator image, passed to the chart as image.repository:tag if set
#   E2E_TIMEOUT           seconds to wait for each step (default 600)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chart="$root/charts/raftkv-operator"

skip() { echo "k8s-e2e: SKIPPED: $*"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }

[ -n "${KUBECONFIG:-}" ] || skip "KUBECONFIG is not set"
command -v kubectl >/dev/null || skip "kubectl not installed"
command -v helm >/dev/null || skip "helm not installed"
command -v etcdctl >/dev/null || skip "etcdctl not installed (Debian package etcd-client)"
kubectl version --request-timeout=10s >/dev/null 2>&1 || skip "no Kubernetes API server reachable through KUBECONFIG=$KUBECONFIG"
[ -d "$chart" ] || { echo "k8s-e2e: FAILED: chart $chart not found"; exit 1; }

ns="${E2E_NAMESPACE:-raftkv-e2e-$RANDOM}"
repo="${E2E_IMAGE_REPO:-ghcr.io/raftkv/kvnode}"
version="${E2E_VERSION:-0.1.0}"
upgrade="${E2E_UPGRADE_VERSION:-$version}"
timeout="${E2E_TIMEOUT:-600}"
passed=0
failed=0
pf_pid=""

cleanup() {
  [ -n "$pf_pid" ] && kill "$pf_pid" 2>/dev/null || true
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  helm uninstall kv-operator -n "$ns" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step() {
  local name="$1"; shift
  echo "--- $name"
  if "$@"; then echo "ok: $name"; passed=$((passed + 1)); else echo "FAILED: $name"; failed=$((failed + 1)); report; fi
}

report() {
  echo "$passed passed, $failed failed"
  kubectl -n "$ns" get kvc,sts,pods,pvc -o wide || true
  kubectl -n "$ns" describe kvc e2e || true
  [ "$failed" -eq 0 ] || exit 1
}

wait_for() { # description, command...
  local what="$1"; shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "timed out waiting for $what"; return 1; fi
    sleep 3
  done
}

jsonpath() { kubectl -n "$ns" get kvc e2e -o "jsonpath=$1"; }
ready_is() { [ "$(jsonpath '{.status.conditions[?(@.type=="Ready")].status}')" = True ] && [ "$(jsonpath '{.status.readyReplicas}')" = "$1" ]; }
version_is() { [ "$(jsonpath '{.status.currentVersion}')" = "$1" ] && ready_is "$2"; }

install() {
  kubectl create namespace "$ns"
  kubectl apply -f "$root/crds/kvcluster.yaml"
  local args=()
  if [ -n "${E2E_OPERATOR_IMAGE:-}" ]; then
    args+=(--set "image.repository=${E2E_OPERATOR_IMAGE%:*}" --set "image.tag=${E2E_OPERATOR_IMAGE##*:}")
  fi
  helm install kv-operator "$chart" -n "$ns" --wait --timeout "${timeout}s" "${args[@]}"
}

apply_cluster() {
  kubectl -n "$ns" apply -f - <<YAML
apiVersion: raftkv.dev/v1alpha1
kind: KVCluster
metadata:
  name: e2e
spec:
  replicas: 3
  image: $repo:$version
  version: "$version"
  storage:
    size: 1Gi
YAML
  wait_for "3 ready members" ready_is 3
}

etcd() { ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:23790 --command-timeout=10s "$@"; }

port_forward() {
  kubectl -n "$ns" port-forward svc/e2e 23790:2379 >/dev/null 2>&1 &
  pf_pid=$!
  wait_for "port-forward" bash -c 'exec 3<>/dev/tcp/127.0.0.1/23790'
}

write_read() { etcd put e2e-key "$1" && [ "$(etcd get e2e-key --print-value-only)" = "$1" ]; }

scale_to() {
  kubectl -n "$ns" scale kvc/e2e --replicas="$1"
  wait_for "$1 ready members" ready_is "$1"
  [ "$(kubectl -n "$ns" get sts e2e -o jsonpath='{.spec.replicas}')" = "$1" ]
}

upgrade() {
  kubectl -n "$ns" patch kvc e2e --type merge -p "{\"spec\":{\"image\":\"$repo:$upgrade\",\"version\":\"$upgrade-e2e\"}}"
  wait_for "rollout to $upgrade" version_is "$upgrade-e2e" 3
}

delete_cluster() {
  kubectl -n "$ns" delete kvc e2e --wait=true --timeout="${timeout}s"
  wait_for "statefulset gone" bash -c "! kubectl -n $ns get sts e2e"
}

step "install operator chart" install
step "create a 3-member cluster" apply_cluster
step "port-forward the client service" port_forward
step "write and read" write_read one
step "scale 3 -> 5 (kubectl scale)" scale_to 5
step "data survives scale-up" write_read two
step "scale 5 -> 3" scale_to 3
step "upgrade" upgrade
step "data survives upgrade" write_read three
step "delete" delete_cluster
report
