# The scan-engine-operator image.
#
# On a machine with a registry:   docker build -t scan-engine-operator:0.1.0 .
#   stage `builder` compiles the operator in RUST_IMAGE; the last stage copies it onto
#   RUNTIME_IMAGE (distroless cc: glibc, libgcc, CA certificates, user nonroot 65532).
# Without a registry:             cargo xtask images
#   builds the binary on the host, assembles a root filesystem (binary + the shared libraries
#   it links) and builds `--target prebuilt --build-arg RUNTIME_IMAGE=scratch` from it.
# Both run as 65532:65532 and need no writable path: the root filesystem can be read-only.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# --- prebuilt: the build context is a directory with rootfs/ (see xtask/src/images.rs) -------
FROM ${RUNTIME_IMAGE} AS prebuilt
LABEL org.opencontainers.image.title="scan-engine-operator" \
      org.opencontainers.image.description="Runs Scan Engines and Security Consoles as Kubernetes custom resources" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/scan-engine-operator/scan-engine-operator"
COPY rootfs/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/scan-engine-operator"]

# --- builder: the build context is the workspace ------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p scan-engine-operator --bin scan-engine-operator \
    && install -D -m 0755 target/release/scan-engine-operator /out/usr/local/bin/scan-engine-operator

# --- runtime (default) ----------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="scan-engine-operator" \
      org.opencontainers.image.description="Runs Scan Engines and Security Consoles as Kubernetes custom resources" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/scan-engine-operator/scan-engine-operator"
COPY --from=builder /out/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/scan-engine-operator"]
