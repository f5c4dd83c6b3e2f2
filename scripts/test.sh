#!/usr/bin/env bash
# The project's one test command (the README's, and what CI runs).
#
# Installs what the suites need (etcdctl and Prometheus from Debian, the chart tools from
# PyPI), then: chart tests, format check, clippy with warnings as errors, the images built from
# the debug binaries of the test build, every test in the workspace (the container fault suite
# included: Docker is required here), the image smoke test, and a real Prometheus scraping a
# local cluster, and a Python etcd client from PyPI against one.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
need_apt() { # need_apt <command> <package>
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

echo "== installing test tools"
need_apt etcdctl etcd-client
export RAFTKV_REQUIRE_ETCDCTL=1
need_apt curl curl
export RAFTKV_REQUIRE_CURL=1
# slowfs's mount test (tools/slowfs/tests/mount.rs): /dev/fuse, and fusermount3 where not root.
need_apt fusermount3 fuse3
export RAFTKV_REQUIRE_FUSE=1

echo "== chart tests (Helm v4 SDK, kubernetes-validate)"
python3 -m pip install -q -r tests/chart/requirements.txt
python3 -m pytest -q -p no:cacheprovider tests/chart

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test --no-run (builds the test binaries and target/debug/kvnode, kv-operator)"
cargo test --workspace --locked --no-run

echo "== images from those debug binaries (nothing pulled, no second cargo build)"
# A separate `cargo build -p kvnode` would resolve features differently and recompile.
target_dir="${CARGO_TARGET_DIR:-target}"
SKIP_CARGO=1 BIN_DIR="$target_dir/debug" scripts/build-images.sh

echo "== cargo test"
# The container fault suite (node/tests/faults_container.rs) runs on those images and fails,
# rather than skipping, when Docker is unavailable.
RAFTKV_REQUIRE_DOCKER=1 cargo test --workspace --locked --no-fail-fast

echo "== image smoke test (read-only root, uid 65532, no shell, CRD, a write)"
RAFTKV_REQUIRE_DOCKER=1 SKIP_BUILD=1 tests/images/smoke.sh

echo "== benchmark smoke run: kvbench against etcd and raftkv, seconds per workload"
need_apt etcd etcd-server
# Debug binaries from the test build: this checks the harness still works end to end, it does
# not measure anything (scripts/bench.sh without --smoke does, see BENCHMARKS.md).
KVBENCH="$target_dir/debug/kvbench" scripts/bench.sh --smoke --no-build --require-raftkv \
  --raftkv-bin "$target_dir/debug/kvnode"

echo "== a Python etcd client from PyPI (python-etcd3) against a dev cluster"
python3 -m pip install -q -r tests/python-client/requirements.txt
RAFTKV_REQUIRE_PYTHON_CLIENT=1 python3 -m pytest -q -p no:cacheprovider tests/python-client

echo "== real Prometheus scrape of a dev cluster (promtool checks included)"
need_apt promtool prometheus
# Uses target/debug/kvnode, which `cargo test` above built for the integration tests (a
# separate `cargo build -p kvnode` would resolve features differently and recompile).
RAFTKV_REQUIRE_PROMETHEUS=1 python3 -m pytest -q -p no:cacheprovider tests/prometheus
