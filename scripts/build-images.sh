#!/usr/bin/env bash
# Builds raftkv/kvnode:$TAG and raftkv/kv-operator:$TAG without pulling anything: the binaries
# are compiled on the host and put on a base image made here from a minimal root filesystem
# (`docker import`): the glibc libraries the binaries link (from ldd), CA certificates, and
# /etc/passwd with the non-root user 65532. No shell, no package manager. The images match the
# Dockerfile's `kvnode` and `kv-operator` targets (same user, paths, entrypoints, ports).
#
#   scripts/build-images.sh                     # release build, tag dev
#   TAG=x PROFILE=dev scripts/build-images.sh   # from the debug binaries (faster to build)
#   SKIP_CARGO=1 BIN_DIR=target/debug scripts/build-images.sh
#       # from binaries already built (CI reuses the ones `cargo test --workspace` built: a
#       # separate `cargo build -p kvnode` resolves features differently and recompiles)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${TAG:-dev}"
PROFILE="${PROFILE:-release}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$PROFILE" in
  release) out_dir="$TARGET_DIR/release" ;;
  dev) out_dir="$TARGET_DIR/debug" ;;
  *) echo "PROFILE must be release or dev" >&2; exit 2 ;;
esac
out_dir="${BIN_DIR:-$out_dir}"

if [ "${SKIP_CARGO:-0}" = 1 ]; then
  echo "== using the binaries in $out_dir (SKIP_CARGO=1)"
else
  echo "== cargo build --profile $PROFILE -p kvnode -p kv-operator"
  cargo build --profile "$PROFILE" --locked -p kvnode -p kv-operator
fi
for bin in kvnode kv-operator; do
  [ -x "$out_dir/$bin" ] || { echo "no $out_dir/$bin: build it first or unset SKIP_CARGO" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{etc,tmp,usr/local/bin,var/lib/kvnode,etc/ssl/certs}
chmod 1777 "$rootfs/tmp"

# Shared libraries (and the dynamic loader) of both binaries, at the paths ldd resolves.
for bin in kvnode kv-operator; do
  ldd "$out_dir/$bin" | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(/ { print $1 }'
done | sort -u | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
fi
cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
chown 65532:65532 "$rootfs/var/lib/kvnode"

base="raftkv/base:$TAG"
echo "== docker import $base"
tar -C "$rootfs" --numeric-owner -cf - . | docker import - "$base" >/dev/null

for bin in kvnode kv-operator; do
  ctx="$work/ctx-$bin"
  mkdir -p "$ctx"
  strip --strip-debug -o "$ctx/$bin" "$out_dir/$bin"
  if [ "$bin" = kvnode ]; then
    extra='EXPOSE 2379 2380 2381
VOLUME ["/var/lib/kvnode"]
ENV KVNODE_DATA_DIR=/var/lib/kvnode/data
ENTRYPOINT ["/usr/local/bin/kvnode"]'
  else
    extra='EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kv-operator"]
CMD ["run"]'
  fi
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $base
COPY $bin /usr/local/bin/$bin
USER 65532:65532
$extra
DOCKERFILE
  echo "== docker build raftkv/$bin:$TAG"
  # The classic builder resolves FROM from local images only when they exist: nothing is pulled.
  # Its deprecation notice is only shown when the build fails.
  if ! out="$(DOCKER_BUILDKIT=0 docker build -q -t "raftkv/$bin:$TAG" "$ctx" 2>&1)"; then
    echo "$out" >&2
    exit 1
  fi
done

docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^raftkv/(base|kvnode|kv-operator):$TAG "
