# syntax=docker/dockerfile:1
#
# hss-operator image: a static musl binary on distroless/static (no shell, no libc), running as
# 65532:65532.
#
#   docker build -t hss-operator:0.1.0 .
#
# Why musl: TLS is rustls with the ring provider (deny.toml bans OpenSSL and aws-lc-sys), so the
# only C in the build is ring's, which musl-gcc compiles, and the binary needs no libc at run
# time. A static glibc binary would break DNS: getaddrinfo loads NSS modules, which
# distroless/static does not have. The binary is built for the build platform's architecture
# (amd64 or arm64: `docker buildx build --platform linux/arm64 .` builds the other one under
# emulation).

ARG RUST_VERSION=1.95

# Base images are referenced by tag, not digest: a digest can only be pinned where it was
# verified against the publisher's registry, and this project's build machines reach no
# registry (scripts/image.sh assembles the distroless base from Debian packages and tags it
# under the same name). Pin both by digest in your own build if your policy asks for it.

FROM rust:${RUST_VERSION}-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# musl-tools: musl-gcc for ring. Not version-pinned: the base image pins the Debian release,
# and security updates of bookworm should apply.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The release binary for <arch>-unknown-linux-musl, statically linked and stripped. The cargo
# registry and target directory are BuildKit caches, so the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    target="$(uname -m)-unknown-linux-musl" \
    && rustup target add "${target}" \
    && export "CC_${target//-/_}=musl-gcc" CARGO_PROFILE_RELEASE_STRIP=symbols \
    && cargo build --release --locked --target "${target}" -p hss-operator --bin hss-operator \
    && install -D -m 0755 "target/${target}/release/hss-operator" /out/hss-operator \
    && if readelf -d /out/hss-operator | grep -q NEEDED; then echo "hss-operator is not static" >&2; exit 1; fi \
    && /out/hss-operator --version

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="hss-operator" \
      org.opencontainers.image.description="Kubernetes operator for Huawei Cloud HSS cluster and IaC scans" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/hss-operator /hss-operator
USER 65532:65532
ENTRYPOINT ["/hss-operator"]
CMD ["run"]
