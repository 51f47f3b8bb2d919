# syntax=docker/dockerfile:1
#
# One image, three binaries (the third, `simulator`, is the demo's Meeting BaaS simulator and
# sink: docs/simulator.md). The ingress and the processor come from one workspace and share
# almost every dependency, so one build compiles them once, one cache layer serves both, and
# users pull one image; compose picks the binary (`entrypoint: ["processor"]`). Separate images
# would double the build and the pulls and buy no isolation: both run as the same non-root user
# with the same few libraries.

# --- dependencies, cached: rebuilt only when Cargo.toml / Cargo.lock change (cargo-chef) ---
FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The workspace's default members are the services (not the test crate).
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p ingress -p processor -p simulator \
 && install -D -m 0755 target/release/ingress target/release/processor target/release/simulator -t /out

# --- runtime: Debian bookworm-slim, CA certificates for HTTPS to the Meeting BaaS API ---
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin hookstream
COPY --from=builder /out/ingress /out/processor /out/simulator /usr/local/bin/
USER hookstream
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/ingress"]
