# PostgreSQL 15 from Debian 12's postgresql-15 package, for docker-compose.gateways.yml (the
# gateways' shared usage ledger; docs/operations.md, "Several gateways"). Build from the
# repository root:
#   docker build -f docker/postgres.Dockerfile -t switchyard-postgres .
# Not built in CI (CI has no Docker daemon). Over TCP it takes TLS connections with a client
# certificate only (postgres-entrypoint's pg_hba.conf): give it the ssl_* settings as arguments,
# as docker-compose.gateways.yml does.
FROM debian:12-slim
# The package's `postgres` user, made first with a fixed uid (10003; postgresql-common makes it
# only when it is missing), so that docker-compose.gateways.yml's certs service can give it
# PostgreSQL's TLS key (PostgreSQL refuses a key that is not its user's, or root's, mode 0600).
RUN groupadd --system --gid 10003 postgres \
 && useradd --system --uid 10003 --gid postgres --home-dir /var/lib/postgresql \
      --shell /bin/bash postgres \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
COPY docker/postgres-entrypoint /usr/local/bin/postgres-entrypoint
ENV PGDATA=/var/lib/postgresql/data
RUN mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
VOLUME /var/lib/postgresql/data
USER postgres
EXPOSE 5432
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD /usr/bin/pg_isready -q -h 127.0.0.1 -d switchyard || exit 1
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
