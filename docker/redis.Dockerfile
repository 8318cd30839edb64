# Redis from Debian 12's redis-server package, for docker-compose.gateways.yml (shared API key
# quotas and stream affinity; docs/operations.md, "Several gateways"). Build from the repository
# root:
#   docker build -f docker/redis.Dockerfile -t switchyard-redis .
# Not built in CI (CI has no Docker daemon).
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD redis-cli -h 127.0.0.1 ping | grep -q PONG || exit 1
# Only the compose network reaches it (no published port): no persistence (quotas and affinity
# rebuild themselves), no password. Give it a password (requirepass and the gateways'
# state.redis.password_file) before it is reachable from anything else.
ENTRYPOINT ["/usr/bin/redis-server"]
CMD ["--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
