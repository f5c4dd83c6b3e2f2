#!/usr/bin/env bash
# Image smoke test: builds the images with scripts/build-images.sh (nothing pulled), then
# - runs raftkv/kvnode with a read-only root filesystem as a one-member cluster, its data on the
#   image's volume, and waits for /livez and /readyz to answer 200 and a write to go through;
# - checks both images run as uid 65532 and contain no shell;
# - runs `kv-operator crd` in its image (read-only) and compares it with crds/kvcluster.yaml;
# - prints the image sizes.
# Needs a Docker engine (says SKIPPED without one, fails instead with RAFTKV_REQUIRE_DOCKER=1).
# SKIP_BUILD=1 reuses images already built; TAG as in build-images.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG="${TAG:-dev}"

if ! docker info >/dev/null 2>&1; then
  if [ "${RAFTKV_REQUIRE_DOCKER:-0}" = 1 ]; then
    echo "FAIL: RAFTKV_REQUIRE_DOCKER=1 but there is no Docker engine" >&2
    exit 1
  fi
  echo "SKIPPED: no Docker engine" >&2
  exit 0
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  scripts/build-images.sh
fi

fail() { echo "FAIL: $*" >&2; exit 1; }
name="raftkv-smoke-$$"
cleanup() { docker rm -f -v "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

for image in kvnode kv-operator; do
  user="$(docker image inspect -f '{{.Config.User}}' "raftkv/$image:$TAG")"
  [ "$user" = "65532:65532" ] || fail "raftkv/$image runs as '$user'"
  if docker run --rm --read-only --entrypoint /bin/sh "raftkv/$image:$TAG" -c true >/dev/null 2>&1; then
    fail "raftkv/$image has a shell"
  fi
done

docker run --rm --read-only "raftkv/kv-operator:$TAG" crd | diff -u crds/kvcluster.yaml - \
  || fail "kv-operator crd in the image differs from crds/kvcluster.yaml"
echo "ok: kv-operator image prints the checked-in CRD"

docker run -d --name "$name" --read-only -p 127.0.0.1::2379 -p 127.0.0.1::2381 "raftkv/kvnode:$TAG" \
  --name smoke \
  --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster smoke=http://127.0.0.1:2380 \
  --listen-metrics-urls http://0.0.0.0:2381 >/dev/null
http_port="$(docker port "$name" 2381/tcp | head -n1 | sed 's/.*://')"
client_port="$(docker port "$name" 2379/tcp | head -n1 | sed 's/.*://')"

wait_200() { # wait_200 <path>: polls until the endpoint answers 200 (30 s at most)
  for _ in $(seq 1 150); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port$1")" = 200 ]; then
      return 0
    fi
    [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] \
      || { docker logs "$name" >&2; fail "kvnode exited"; }
    sleep 0.2
  done
  docker logs "$name" >&2
  fail "$1 never answered 200"
}
wait_200 /livez
echo "ok: /livez answers 200 on a read-only root filesystem"
wait_200 /readyz
echo "ok: /readyz answers 200 (the member leads itself)"
curl -sf "http://127.0.0.1:$http_port/metrics" | grep -Eq '^raftkv_server_has_leader(\{[^}]*\})? 1$' \
  || fail "metrics do not report a leader"
if command -v etcdctl >/dev/null; then
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$client_port" put smoke-key smoke-value >/dev/null
  got="$(ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$client_port" get --print-value-only smoke-key)"
  [ "$got" = smoke-value ] || fail "etcdctl read back '$got'"
  echo "ok: etcdctl put/get through the container"
fi

echo "== image sizes"
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^raftkv/(kvnode|kv-operator):$TAG "
