# One-shot maker of the TLS material for docker-compose.gateways.yml: a private CA, one
# certificate per gateway (gateway-K, naming its service name, localhost and 127.0.0.1), per
# orchestrator, one for Redis and one for PostgreSQL, and the gateways' shared internal secret,
# written by scripts/make-tls-certs into the compose file's `tls` volume, which the gateways,
# Redis and PostgreSQL mount read-only, and each orchestrator's CA, certificate and key copied
# into a volume of its own (docs/operations.md, "Certificates: the quick start's, the compose
# file's and your own"). Build from the repository root:
#   docker build -f docker/certs.Dockerfile -t switchyard-certs .
# Not built in CI (CI has no Docker daemon).
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssl \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/make-tls-certs /usr/local/bin/make-tls-certs
# A fresh named volume mounted here takes this folder's owner and mode.
RUN install -d -m 0755 /tls
VOLUME /tls
# It runs as root, once, and exits: it gives each key (mode 0600) to the user of the container
# that reads it (uid 10001: the gateways' and orchestrators' `switchyard`; uid 10002: Redis's
# `redis`; uid 10003: PostgreSQL's `postgres`), which only root can do. It serves nothing and
# publishes nothing.
USER root
ENTRYPOINT ["/usr/local/bin/make-tls-certs"]
CMD ["--help"]
