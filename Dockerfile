# syntax=docker/dockerfile:1
# raftkv images for users with registry access: a Rust builder stage and a minimal runtime stage
# (glibc, CA certificates, no shell, uid 65532). Targets:
#   docker build --target kvnode      -t raftkv/kvnode:dev .
#   docker build --target kv-operator -t raftkv/kv-operator:dev .
# Machines without a registry build the same images with scripts/build-images.sh.

ARG RUST_VERSION=1.90

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The build needs nothing from the system: protoc comes from the protoc-bin-vendored crate
# (.cargo/config.toml points PROTOC at tools/protoc).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kvnode -p kv-operator \
    && mkdir -p /out /out/data \
    && cp target/release/kvnode target/release/kv-operator /out/ \
    && strip /out/kvnode /out/kv-operator

# distroless/cc: glibc and libgcc only, user `nonroot` (65532), no shell or package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER 65532:65532

FROM runtime AS kv-operator
COPY --from=builder /out/kv-operator /usr/local/bin/kv-operator
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kv-operator"]
CMD ["run"]

FROM runtime AS kvnode
COPY --from=builder /out/kvnode /usr/local/bin/kvnode
# The data volume's mount point, writable by the runtime user (the operator mounts the member's
# claim here and passes --data-dir=/var/lib/kvnode/data).
COPY --from=builder --chown=65532:65532 /out/data /var/lib/kvnode
# Client, peer and metrics/health ports.
EXPOSE 2379 2380 2381
VOLUME ["/var/lib/kvnode"]
ENV KVNODE_DATA_DIR=/var/lib/kvnode/data
ENTRYPOINT ["/usr/local/bin/kvnode"]
