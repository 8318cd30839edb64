# Redis from Debian 12's redis-server package, for docker-compose.gateways.yml (shared API key
# quotas and stream affinity; docs/operations.md, "Several gateways"). Build from the repository
# root:
#   docker build -f docker/redis.Dockerfile -t switchyard-redis .
# Not built in CI (CI has no Docker daemon).
FROM debian:12-slim
# The package's `redis` user, made first with a fixed uid (10002; the package keeps an existing
# one), so that docker-compose.gateways.yml's certs service can give it Redis's TLS key.
RUN groupadd --system --gid 10002 redis \
 && useradd --system --uid 10002 --gid redis --home-dir /var/lib/redis \
      --shell /usr/sbin/nologin redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD redis-cli -h 127.0.0.1 ping | grep -q PONG || exit 1
# Only the compose network reaches it (no published port): no persistence (quotas and affinity
# rebuild themselves), no password. These defaults are plain TCP; docker-compose.gateways.yml
# runs it TLS-only with client certificates required (its `command`). Give it a password too
# (requirepass and the gateways' state.redis.password_file) before it is reachable from
# anything else.
ENTRYPOINT ["/usr/bin/redis-server"]
CMD ["--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
