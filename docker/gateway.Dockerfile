# switchyard-gateway on Debian 12. Build from the repository root:
#   docker build -f docker/gateway.Dockerfile -t switchyard-gateway .
# See docker/README.md. Not built in CI (CI has no Docker daemon).

# Build stage: the repository's own setup and build scripts, as on a developer's machine.
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps scripts/install-deps
# install-deps runs apt-get as root (no sudo in the image). It also installs the test tools
# (chromium, prometheus, systemd); they stay in this stage only.
RUN scripts/install-deps && rm -rf /var/lib/apt/lists/*
COPY . .
# Release build of the daemons only: tests and benchmarks are CI's job, not the image's.
RUN rm -rf build && scripts/build -DSWITCHYARD_BUILD_TESTS=OFF -DSWITCHYARD_BUILD_BENCH=OFF

# Runtime stage: only the shared libraries the binary needs (readelf -d NEEDED, mapped to Debian
# packages) and curl for the health check.
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libabsl20220623 libfmt9 libgrpc++1.51 libgrpc29 libprometheus-cpp-core1.0 libprotobuf32 \
      libspdlog1.10 libsystemd0 libhiredis0.14 libsqlite3-0 libpq5 \
      libavcodec59 libavformat59 libavutil57 libswscale6 libdeflate0 \
      curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# /var/lib/switchyard: state a gateway writes (docker-compose.gateways.yml's ledger journals, on a
# named volume that takes this folder's owner).
RUN useradd --system --uid 10001 --user-group --home-dir /opt/switchyard \
      --shell /usr/sbin/nologin switchyard \
 && install -d -o switchyard -g switchyard -m 0750 /var/lib/switchyard
COPY --from=build /src/build/bin/switchyard-gateway /usr/local/bin/switchyard-gateway
COPY --from=build /src/build/bin/switchyard /usr/local/bin/switchyard
COPY --from=build /src/configs /opt/switchyard/configs
WORKDIR /opt/switchyard
USER switchyard
# 50051: gRPC (switchyard.v1.Gateway, Registry for orchestrators, KServe); 8935: HTTP (Livepeer AI
# API, /healthz, /readyz); 8934: the operators' HTTP port (/status, /metrics; publish it privately).
EXPOSE 50051 8935 8934
ENV SWITCHYARD_HTTP_PORT=8935
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${SWITCHYARD_HTTP_PORT}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/switchyard-gateway"]
# The quick start's config with container addresses: listen on every interface, not loopback.
CMD ["--config", "/opt/switchyard/configs/gateway.json", \
     "--listen", "0.0.0.0:50051", "--http-listen", "0.0.0.0:8935", "--admin-listen", "0.0.0.0:8934"]
