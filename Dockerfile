# syntax=docker/dockerfile:1
# tether-pro: a multi-stage build. The builder compiles the release binary from the locked
# dependency graph; the runtime is Debian slim with only CA certificates, running as a
# non-root user. `docker compose up --build` uses it for the migrate, dashboard and sync services.

# The toolchain the crate is developed and tested with (rust-version is 1.89).
FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tether-pro \
 && cp target/release/tether-pro /usr/local/bin/tether-pro

# Debian 12 (bookworm) slim, pinned to a point release.
FROM debian:12.12-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tether \
 && useradd --system --uid 10001 --gid tether --home-dir /var/lib/tether-pro --shell /usr/sbin/nologin tether \
 && mkdir -p /var/lib/tether-pro \
 && chown tether:tether /var/lib/tether-pro
COPY --from=builder /usr/local/bin/tether-pro /usr/local/bin/tether-pro
USER tether:tether
WORKDIR /var/lib/tether-pro
EXPOSE 8080 3000
# No curl in the image: bash's /dev/tcp asks the dashboard for its static OpenAPI document
# (answered without touching ClickHouse) and expects HTTP 200. Assumes the default
# serve.prefix (/tether/dashboard) and port 8080; docker-compose.yml overrides it per service.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=5 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /tether/dashboard/openapi.json HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["tether-pro"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
