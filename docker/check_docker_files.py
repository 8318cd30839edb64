#!/usr/bin/env python3
"""Checks docker/ without a Docker daemon (CI has none, so the images are never built there).

- Each Dockerfile: Debian 12 stages, multi-stage, the repo's own scripts (present, executable),
  COPY sources that exist in the repository or are produced by the build stage (a CMake target,
  a model prepare-models makes), a non-root USER, EXPOSE, a HEALTHCHECK on /healthz, and an
  ENTRYPOINT that was copied in.
- docker-compose.yml (and the GPU override) parse; every mounted host path exists; the
  orchestrators' container configs dial the gateway service on the port it listens on and
  advertise their own service name.
- docker-compose.gateways.yml: three gateways whose configs are configs/gateway.json but for
  their addresses, shared state (one Redis, one PostgreSQL ledger, journals on named volumes)
  and TLS, Redis and PostgreSQL from Debian 12 packages and not published, and orchestrators
  that register with every gateway. TLS: the one-shot `certs` service (certs.Dockerfile,
  scripts/make-tls-certs) writes the volume the gateways and Redis mount read-only, before they
  start; every gateway serves HTTPS (http_tls) and names the others as https://SERVICE:PORT
  peers with state.peer_tls; Redis is TLS-only with client certificates, and the gateways
  present theirs; PostgreSQL has ssl=on and its certificate, its entrypoint's pg_hba.conf has
  hostssl lines with `cert` authentication and no plain `host` line, and the gateways' ledger
  dsn says sslmode=verify-full with the CA and their certificates; the gateways' gRPC ports
  (tls) and their connections to the orchestrators (orchestrator_tls) are TLS, the
  orchestrators' gRPC ports require the gateways' client certificates and they register over
  TLS (gateway_tls), from a volume of their own that holds only the CA and their certificate
  (certs --copy), never the gateways' `tls` volume; every file the configs, Redis and
  PostgreSQL name is one the certs service makes, each key owned by the uid its image runs as.
  The certs service's command is run (without the owners) into a temporary folder: each
  certificate chains to the CA and names the hosts it is dialled by (peers, Redis, PostgreSQL,
  the orchestrators, the health check's 127.0.0.1); each --copy folder holds the CA and that
  certificate and key only.
- With --bin-dir: each binary a runtime stage copies in from build/bin/ (the daemon, the gateway
  image's `switchyard` CLI) that is built there has every library it links (readelf -d NEEDED,
  resolved by this host's loader: ldconfig -p, else ldd) from a Debian package (dpkg -S) that the
  last stage's apt-get install names, that those depend on (Depends, Pre-Depends, transitively,
  every alternative, as installed on this host: dpkg-query), or that debian:12-slim has (Priority
  required or Essential, and their dependencies). A library no package owns fails too.
- With --bin-dir and --model-dir: each container orchestrator config really loads (the daemon
  starts with it on loopback, ephemeral ports, no gateway), so its models_file and model paths
  resolve in the same layout the images use; each container gateway config loads with the TLS
  files the certs service makes (paths moved to the temporary folder, ephemeral loopback ports;
  Redis and PostgreSQL are unreachable there, which a gateway starts with) and serves HTTPS and
  gRPC over TLS that a client trusting only the CA accepts under the gateway's service name;
  each container orchestrator config of docker-compose.gateways.yml starts the same way (its
  files from its --copy folder) and its gRPC port completes a TLS handshake, checked for its
  service name, only for a client that presents a certificate from the CA.

Usage: check_docker_files.py [--bin-dir DIR] [--model-dir DIR]
Exit status 0 when every check passes; each failure is printed.
"""

import argparse
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = os.path.join(ROOT, "docker")
DOCKERFILES = {"gateway.Dockerfile": "switchyard-gateway",
               "orchestrator.Dockerfile": "switchyard-orchestrator"}
failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print("FAIL:", what)


def instructions(path):
    """(KEYWORD, args) per Dockerfile instruction, continuation lines joined, comments dropped."""
    out, current = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            current += line
            keyword, _, args = current.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    return out


def cmake_targets():
    targets = set()
    for dirpath, _, files in os.walk(os.path.join(ROOT, "src")):
        if "CMakeLists.txt" in files:
            with open(os.path.join(dirpath, "CMakeLists.txt")) as f:
                targets.update(re.findall(r"add_executable\(\s*([\w-]+)", f.read()))
    return targets


def prepared_models():
    """The .pt files of the default set, as `scripts/prepare-models --list` marks them."""
    out = subprocess.run([os.path.join(ROOT, "scripts", "prepare-models"), "--list"],
                         check=True, capture_output=True, text=True).stdout
    return {line.split()[1] + ".pt" for line in out.splitlines() if line.startswith("* ")}


def check_dockerfile(name, binary):
    path = os.path.join(DOCKER, name)
    check(os.path.isfile(path), "%s exists" % name)
    if not os.path.isfile(path):
        return
    ins = instructions(path)
    froms = [a for k, a in ins if k == "FROM"]
    check(len(froms) >= 2, "%s is multi-stage" % name)
    for f in froms:
        check(re.match(r"debian:12(-slim)?(\s|$)", f) is not None,
              "%s: stage %r is Debian 12" % (name, f))
    runs = " ".join(a for k, a in ins if k == "RUN")
    for script in ("scripts/install-deps", "scripts/build"):
        check(script in runs, "%s runs %s" % (name, script))
    for script in set(re.findall(r"scripts/[\w-]+", runs)):
        p = os.path.join(ROOT, script)
        check(os.path.isfile(p) and os.access(p, os.X_OK),
              "%s: %s exists and is executable" % (name, script))
    targets, models = cmake_targets(), prepared_models()
    copied = set()
    for k, a in ins:
        if k != "COPY":
            continue
        parts = shlex.split(a)
        from_stage = [p for p in parts if p.startswith("--from=")]
        args = [p for p in parts if not p.startswith("--")]
        sources, dest = args[:-1], args[-1]
        for s in sources:
            copied.add(dest if not dest.endswith("/") else dest + os.path.basename(s))
            if not from_stage:
                check(os.path.exists(os.path.join(ROOT, s)), "%s: COPY source %s exists" % (name, s))
                continue
            rel = s[len("/src/"):] if s.startswith("/src/") else None
            check(rel is not None, "%s: %s comes from the build stage's /src" % (name, s))
            if rel is None:
                continue
            if rel.startswith("build/bin/"):
                check(os.path.basename(rel) in targets,
                      "%s: %s is a CMake executable" % (name, rel))
            elif rel.startswith("models/"):
                check(os.path.basename(rel) in models,
                      "%s: %s is made by scripts/prepare-models" % (name, rel))
                check("scripts/prepare-models" in runs, "%s runs scripts/prepare-models" % name)
            else:
                check(os.path.exists(os.path.join(ROOT, rel)),
                      "%s: %s exists in the repository" % (name, rel))
    users = [a for k, a in ins if k == "USER"]
    check(bool(users) and users[-1] not in ("root", "0"), "%s runs as a non-root user" % name)
    check(any(k == "EXPOSE" for k, _ in ins), "%s exposes its ports" % name)
    health = " ".join(a for k, a in ins if k == "HEALTHCHECK")
    check("/healthz" in health, "%s has a HEALTHCHECK on /healthz" % name)
    entry = [a for k, a in ins if k == "ENTRYPOINT"]
    check(bool(entry) and json.loads(entry[-1])[0] == "/usr/local/bin/" + binary,
          "%s: ENTRYPOINT is %s" % (name, binary))
    check("/usr/local/bin/" + binary in copied, "%s: %s is copied in" % (name, binary))
    if binary == "switchyard-orchestrator":
        # Every model configs/models.json offers is in the image (its ../models/ paths).
        with open(os.path.join(ROOT, "configs", "models.json")) as f:
            offered = [m["path"] for m in json.load(f)["models"]]
        for rel in offered:
            target = os.path.normpath(os.path.join("/opt/switchyard/configs", rel))
            check(target in copied, "%s: %s (configs/models.json) is copied in" % (name, target))
    check(os.path.isfile(path + ".dockerignore"), "%s has its .dockerignore" % name)


STATE_DOCKERFILES = {"redis.Dockerfile": "redis-server", "postgres.Dockerfile": "postgresql-15"}
CERTS_DOCKERFILE = "certs.Dockerfile"
CERTS_SCRIPT = "scripts/make-tls-certs"


def check_certs_dockerfile():
    """The one-shot TLS maker: Debian 12's openssl and scripts/make-tls-certs, nothing else."""
    name = CERTS_DOCKERFILE
    path = os.path.join(DOCKER, name)
    check(os.path.isfile(path), "%s exists" % name)
    if not os.path.isfile(path):
        return
    ins = instructions(path)
    froms = [a for k, a in ins if k == "FROM"]
    check(froms == ["debian:12-slim"], "%s: one stage on debian:12-slim: %s" % (name, froms))
    runs = " ".join(a for k, a in ins if k == "RUN")
    check(re.search(r"apt-get install [^&]*\bopenssl\b", runs) is not None,
          "%s installs Debian's openssl" % name)
    copies = [[p for p in shlex.split(a) if not p.startswith("--")] for k, a in ins if k == "COPY"]
    check(copies == [[CERTS_SCRIPT, "/usr/local/bin/make-tls-certs"]],
          "%s copies %s only: %s" % (name, CERTS_SCRIPT, copies))
    src = os.path.join(ROOT, CERTS_SCRIPT)
    check(os.path.isfile(src) and os.access(src, os.X_OK), "%s exists and is executable" % src)
    entry = [a for k, a in ins if k == "ENTRYPOINT"]
    check(bool(entry) and json.loads(entry[-1]) == ["/usr/local/bin/make-tls-certs"],
          "%s: ENTRYPOINT is make-tls-certs" % name)
    check(not any(k == "EXPOSE" for k, _ in ins), "%s serves nothing (no EXPOSE)" % name)
    ignore = path + ".dockerignore"
    check(os.path.isfile(ignore), "%s has its .dockerignore" % name)
    if os.path.isfile(ignore):
        with open(ignore) as f:
            lines = f.read().split()
        check("!" + CERTS_SCRIPT in lines, "%s keeps %s in the context" % (ignore, CERTS_SCRIPT))


def image_uid(dockerfile, user):
    """The uid a Dockerfile gives `user` (useradd --uid N ... user), or None."""
    runs = " ".join(a for k, a in instructions(os.path.join(DOCKER, dockerfile)) if k == "RUN")
    for m in re.finditer(r"useradd ([^&;]*)", runs):
        words = m.group(1).split()
        if user in words and "--uid" in words:
            return int(words[words.index("--uid") + 1])
    return None


def check_state_dockerfile(name, package):
    """Redis and PostgreSQL for docker-compose.gateways.yml: Debian 12's own packages."""
    path = os.path.join(DOCKER, name)
    check(os.path.isfile(path), "%s exists" % name)
    if not os.path.isfile(path):
        return
    ins = instructions(path)
    froms = [a for k, a in ins if k == "FROM"]
    check(froms == ["debian:12-slim"], "%s: one stage on debian:12-slim: %s" % (name, froms))
    runs = " ".join(a for k, a in ins if k == "RUN")
    check(re.search(r"apt-get install [^&]*\b%s\b" % re.escape(package), runs) is not None,
          "%s installs Debian's %s" % (name, package))
    for k, a in ins:
        if k != "COPY":
            continue
        for s in [p for p in shlex.split(a) if not p.startswith("--")][:-1]:
            src = os.path.join(ROOT, s)
            check(os.path.isfile(src) and os.access(src, os.X_OK),
                  "%s: COPY source %s exists and is executable" % (name, s))
    users = [a for k, a in ins if k == "USER"]
    check(bool(users) and users[-1] not in ("root", "0"), "%s runs as a non-root user" % name)
    check(any(k == "EXPOSE" for k, _ in ins), "%s exposes its port" % name)
    check(any(k == "HEALTHCHECK" for k, _ in ins), "%s has a HEALTHCHECK" % name)
    check(any(k == "ENTRYPOINT" for k, _ in ins), "%s has an ENTRYPOINT" % name)
    check(os.path.isfile(path + ".dockerignore"), "%s has its .dockerignore" % name)


def host_path(compose_dir, volume):
    return os.path.normpath(os.path.join(compose_dir, volume.split(":")[0]))


def option(command, flag):
    return command[command.index(flag) + 1] if flag in command else None


def check_compose():
    path = os.path.join(DOCKER, "docker-compose.yml")
    with open(path) as f:
        compose = yaml.safe_load(f)
    services = compose.get("services", {})
    check(set(services) == {"gateway", "orchestrator-1", "orchestrator-2"},
          "compose has one gateway and two orchestrators: %s" % sorted(services))
    named = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        df = os.path.join(DOCKER, svc["build"]["context"], svc["build"]["dockerfile"])
        check(os.path.isfile(df), "compose %s builds %s" % (name, df))
        for v in svc.get("volumes", []):
            if v.split(":")[0].startswith((".", "/")):
                check(os.path.exists(host_path(DOCKER, v)), "compose %s mounts %s" % (name, v))
            else:
                check(v.split(":")[0] in named, "compose %s: volume %s is declared" % (name, v))
    gw_cmd = services["gateway"]["command"]
    gw_port = option(gw_cmd, "--listen").rsplit(":", 1)[1]
    configs = []
    for name in ("orchestrator-1", "orchestrator-2"):
        cmd = services[name]["command"]
        container_cfg = option(cmd, "--config")
        # Map the container path back through the mounts to the repository file.
        repo_cfg = None
        for v in services[name].get("volumes", []):
            src, dst = v.split(":")[0], v.split(":")[1]
            if container_cfg.startswith(dst.rstrip("/") + "/"):
                repo_cfg = os.path.join(host_path(DOCKER, src), container_cfg[len(dst) + 1:])
        check(repo_cfg is not None and os.path.isfile(repo_cfg),
              "compose %s: config %s is mounted from the repository" % (name, container_cfg))
        if repo_cfg is None or not os.path.isfile(repo_cfg):
            continue
        with open(repo_cfg) as f:
            cfg = json.load(f)
        configs.append(repo_cfg)
        check(cfg["node_id"] == name, "%s: node_id is the service name" % repo_cfg)
        check(cfg["advertise_address"].split(":")[0] == name,
              "%s: advertises its service name" % repo_cfg)
        check(cfg["gateways"] == ["gateway:" + gw_port], "%s: registers with gateway:%s"
              % (repo_cfg, gw_port))
        check_identity_key_volume("compose", services[name], cfg, named)
        check(cfg["listen"].startswith("0.0.0.0:"), "%s: listens on every interface" % repo_cfg)
        models = os.path.normpath(os.path.join(os.path.dirname(repo_cfg), cfg["models_file"]))
        check(os.path.isfile(models), "%s: models_file %s exists" % (repo_cfg, models))
        health_port = cfg["http_listen"].rsplit(":", 1)[1]
        check(any(p.endswith(":" + health_port) for p in services[name]["ports"]),
              "compose %s publishes its HTTP port %s" % (name, health_port))
    with open(os.path.join(DOCKER, "docker-compose.gpu.yml")) as f:
        gpu = yaml.safe_load(f)
    for name in ("orchestrator-1", "orchestrator-2"):
        devices = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        check(devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"],
              "compose GPU override reserves an NVIDIA GPU for %s" % name)
    return configs


def check_identity_key_volume(compose_name, svc, cfg, named):
    """The node's identity key is on a named volume: it outlives the container."""
    key = cfg.get("identity_key_file", "")
    check(key.startswith("/") and any(
        v.split(":")[0] in named and key.startswith(v.split(":")[1].rstrip("/") + "/")
        for v in svc.get("volumes", [])),
        "%s %s: identity_key_file %r is on a named volume" % (compose_name, cfg.get("node_id"), key))


def mounted_config(svc, container_cfg):
    """The repository file a service's container config path is mounted from, or None."""
    for v in svc.get("volumes", []):
        src, dst = v.split(":")[0], v.split(":")[1]
        if not src.startswith((".", "/")):
            continue  # a named volume
        if container_cfg.startswith(dst.rstrip("/") + "/"):
            return os.path.join(host_path(DOCKER, src), container_cfg[len(dst) + 1:])
    return None


def service_config(compose_name, name, svc):
    """(repository path, parsed JSON) of the config a service's --config names, or (.., None)."""
    if svc is None:
        return None, None
    repo_cfg = mounted_config(svc, option(svc["command"], "--config"))
    check(repo_cfg is not None and os.path.isfile(repo_cfg),
          "%s %s: its config is mounted from the repository" % (compose_name, name))
    if repo_cfg is None or not os.path.isfile(repo_cfg):
        return repo_cfg, None
    with open(repo_cfg) as f:
        return repo_cfg, json.load(f)


def check_compose_gateways():
    """docker-compose.gateways.yml: three gateways sharing Redis and PostgreSQL."""
    path = os.path.join(DOCKER, "docker-compose.gateways.yml")
    with open(path) as f:
        compose = yaml.safe_load(f)
    services = compose.get("services", {})
    gateways = ["gateway-1", "gateway-2", "gateway-3"]
    orchestrators = ["orchestrator-1", "orchestrator-2"]
    check(set(services) == set(gateways + orchestrators + ["redis", "postgres", "certs"]),
          "gateways compose: three gateways, two orchestrators, redis, postgres, certs: %s"
          % sorted(services))
    named = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        df = os.path.join(DOCKER, svc["build"]["context"], svc["build"]["dockerfile"])
        check(os.path.isfile(df), "gateways compose %s builds %s" % (name, df))
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith((".", "/")):
                check(os.path.exists(host_path(DOCKER, v)),
                      "gateways compose %s mounts %s" % (name, v))
            else:
                check(src in named, "gateways compose %s: volume %s is declared" % (name, src))
    for name in ("redis", "postgres"):
        check(not services.get(name, {}).get("ports"),
              "gateways compose: %s is not published (trusted on the compose network only)" % name)
    with open(os.path.join(ROOT, "configs", "gateway.json")) as f:
        base = json.load(f)
    changed = {"gateway_id", "listen", "tls", "orchestrator_tls", "http_listen", "http_tls",
               "admin_listen", "usage_ledger", "state"}
    gw_targets, shared, gw_configs, http_ports = [], set(), {}, {}
    for name in gateways:
        svc = services.get(name)
        repo_cfg, cfg = service_config("gateways compose", name, svc)
        if cfg is None:
            continue
        check(cfg.get("gateway_id") == name, "%s: gateway_id is the service name" % repo_cfg)
        check({k: v for k, v in cfg.items() if k not in changed} ==
              {k: v for k, v in base.items() if k not in changed},
              "%s: configs/gateway.json but for %s" % (repo_cfg, sorted(changed)))
        port = cfg["listen"].rsplit(":", 1)[1]
        check(cfg["listen"].startswith("0.0.0.0:"), "%s: listens on every interface" % repo_cfg)
        gw_targets.append("%s:%s" % (name, port))
        for key in ("http_listen", "admin_listen"):
            p = cfg[key].rsplit(":", 1)[1]
            check(any(str(x).endswith(":" + p) for x in svc.get("ports", [])),
                  "gateways compose %s publishes its %s port %s" % (name, key, p))
        state, ledger = cfg.get("state", {}), cfg.get("usage_ledger", {})
        check(state.get("redis", {}).get("address") == "redis:6379",
              "%s: state.redis is the redis service" % repo_cfg)
        check(isinstance(ledger, dict) and ledger.get("backend") == "postgres" and
              "@postgres:5432/" in ledger.get("dsn", ""),
              "%s: usage_ledger is the postgres service" % repo_cfg)
        journal = ledger.get("journal", "") if isinstance(ledger, dict) else ""
        check(any(v.split(":")[0] in named and journal.startswith(v.split(":")[1] + "/")
                  for v in svc.get("volumes", [])),
              "%s: the ledger journal %s is on a named volume" % (repo_cfg, journal))
        gw_configs[name] = (repo_cfg, cfg)
        http_ports[name] = cfg["http_listen"].rsplit(":", 1)[1]
        # What each gateway has of its own: its id, its peers (the others) and its certificate
        # (as its HTTPS certificate and its client certificate to Redis).
        common = json.loads(json.dumps(state))
        for key in ("gateway_id", "peers"):
            common.pop(key, None)
        for key in ("cert_file", "key_file"):
            common.get("redis", {}).get("tls", {}).pop(key, None)
        common_ledger = {k: v for k, v in ledger.items() if k != "journal"}
        common_ledger["dsn"], _ = dsn_parts(ledger.get("dsn", ""), drop=("sslcert", "sslkey"))
        shared.add(json.dumps([common, common_ledger], sort_keys=True))
    check(len(shared) == 1, "the gateways share one Redis, one ledger, one CA and one secret: %s"
          % shared)
    orch_configs = {}
    for name in orchestrators:
        svc = services.get(name)
        repo_cfg, cfg = service_config("gateways compose", name, svc)
        if cfg is None:
            continue
        orch_configs[name] = (repo_cfg, cfg)
        check(cfg["node_id"] == name, "%s: node_id is the service name" % repo_cfg)
        check(cfg["advertise_address"].split(":")[0] == name,
              "%s: advertises its service name" % repo_cfg)
        check(cfg["gateways"] == gw_targets, "%s: registers with every gateway %s"
              % (repo_cfg, gw_targets))
        check_identity_key_volume("gateways compose", svc, cfg, named)
    tls_dir = check_compose_gateways_tls(services, named, gateways, gw_configs, http_ports,
                                         orch_configs)
    return orch_configs, gw_configs, tls_dir


def dsn_parts(dsn, drop=()):
    """(the dsn less the query parameters in `drop`, {parameter: value}) of a libpq URI."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query)
    kept = urllib.parse.urlencode([(k, v) for k, v in query if k not in drop], safe="/")
    return urllib.parse.urlunsplit(parts._replace(query=kept)), dict(query)


def ro_mount_of(svc, named, path):
    """(volume, mount point) of the read-only named volume a service has `path` on, or None."""
    for v in svc.get("volumes", []):
        parts = v.split(":")
        if (len(parts) == 3 and parts[2] == "ro" and parts[0] in named and
                path.startswith(parts[1].rstrip("/") + "/")):
            return parts[0], parts[1].rstrip("/")
    return None


def depends_on_completed(svc, dependency):
    deps = svc.get("depends_on") or {}
    return isinstance(deps, dict) and (deps.get(dependency) or {}).get(
        "condition") == "service_completed_successfully"


def certs_command(services):
    """The certs service's make-tls-certs arguments: (dir, {name: [san]}, {name: owner}, secret,
    {copy folder: name})."""
    cmd = (services.get("certs") or {}).get("command") or []
    out_dir, names, owners, secret, copies = None, {}, {}, None, {}
    i = 0
    while i < len(cmd):
        arg = cmd[i]
        if arg in ("--dir", "--owner", "--secret", "--days", "--copy") and i + 1 < len(cmd):
            value = cmd[i + 1]
            if arg == "--dir":
                out_dir = value
            elif arg == "--owner":
                who, _, uid_gid = value.partition("=")
                owners[who] = uid_gid
            elif arg == "--secret":
                secret = value
            elif arg == "--copy":
                who, _, folder = value.partition("=")
                copies[folder.rstrip("/")] = who
            i += 2
            continue
        name, _, sans = arg.partition("=")
        names[name] = sans.split(",")
        i += 1
    return out_dir, names, owners, secret, copies


def check_compose_gateways_tls(services, named, gateways, gw_configs, http_ports, orch_configs):
    """TLS between the gateways, to Redis, to PostgreSQL and between gateways and orchestrators,
    from the certs service's volumes. Returns the folder the certs service's command wrote (a
    temporary one), or None."""
    certs = services.get("certs")
    check(certs is not None, "gateways compose has the certs service")
    if certs is None:
        return None
    check(os.path.normpath(os.path.join(DOCKER, certs["build"]["context"],
                                        certs["build"]["dockerfile"])) ==
          os.path.join(DOCKER, CERTS_DOCKERFILE), "certs builds %s" % CERTS_DOCKERFILE)
    out_dir, names, owners, secret, copies = certs_command(services)
    certs_mounts = {v.split(":")[1].rstrip("/"): v.split(":")[0] for v in certs.get("volumes", [])
                    if v.split(":")[0] in named and len(v.split(":")) >= 2}
    check(out_dir in certs_mounts, "certs writes its --dir %s on a named volume" % out_dir)
    volume = certs_mounts.get(out_dir)
    # Each --copy folder's volume: which certificate it holds.
    copy_volumes = {}
    for folder, who in copies.items():
        check(folder in certs_mounts and certs_mounts[folder] != volume,
              "certs --copy %s=%s: the folder is a named volume of its own" % (who, folder))
        check(who in names, "certs --copy %s: certs makes %s's certificate" % (who, who))
        if folder in certs_mounts:
            copy_volumes[certs_mounts[folder]] = who
    gateway_uid = image_uid("gateway.Dockerfile", "switchyard")
    orchestrator_uid = image_uid("orchestrator.Dockerfile", "switchyard")
    redis_uid = image_uid("redis.Dockerfile", "redis")
    postgres_uid = image_uid("postgres.Dockerfile", "postgres")
    check(None not in (gateway_uid, orchestrator_uid, redis_uid, postgres_uid),
          "the gateway, orchestrator, Redis and PostgreSQL images give their users fixed uids "
          "(%s, %s, %s, %s)" % (gateway_uid, orchestrator_uid, redis_uid, postgres_uid))

    def made_file(svc_name, svc, path, owner_uid=None, copy_of=None):
        """`path` (in svc) is on the certs volume (with copy_of: on the volume certs copies
        copy_of's files to), read-only, and a file certs makes there."""
        mount = ro_mount_of(svc, named, path)
        if copy_of is None:
            check(mount is not None and mount[0] == volume,
                  "gateways compose %s: %s is on the certs volume, read-only" % (svc_name, path))
        else:
            check(mount is not None and copy_volumes.get(mount[0]) == copy_of,
                  "gateways compose %s: %s is on the volume certs copies %s's files to, read-only"
                  % (svc_name, path, copy_of))
        if mount is None:
            return
        rel = path[len(mount[1]) + 1:]
        stem, ext = os.path.splitext(rel)
        if copy_of is None:
            made = rel == "ca.pem" or rel == secret or (ext in (".pem", ".key") and stem in names)
        else:
            made = rel in ("ca.pem", copy_of + ".pem", copy_of + ".key")
        check(made, "gateways compose %s: the certs service makes %s" % (svc_name, rel))
        if owner_uid is not None:
            who = rel if rel == secret else stem
            check(owners.get(who, "").split(":")[0] == str(owner_uid),
                  "certs gives %s to uid %s (the user that reads it): %s"
                  % (rel, owner_uid, owners.get(who)))

    for name in gateways:
        svc, (repo_cfg, cfg) = services.get(name), gw_configs.get(name, (None, None))
        if cfg is None:
            continue
        check(depends_on_completed(svc, "certs"),
              "gateways compose %s starts once certs completed" % name)
        state = cfg.get("state", {})
        peers = state.get("peers", {})
        want = {p: "https://%s:%s" % (p, http_ports.get(p)) for p in gateways if p != name}
        check(peers == want, "%s: every other gateway is an https:// peer %s: %s"
              % (repo_cfg, want, peers))
        http_tls, peer_tls = cfg.get("http_tls") or {}, state.get("peer_tls") or {}
        redis_tls = state.get("redis", {}).get("tls") or {}
        check(bool(http_tls.get("cert_file")) and bool(http_tls.get("key_file")),
              "%s: HTTPS on its HTTP ports (http_tls)" % repo_cfg)
        check(bool(peer_tls.get("ca_file")), "%s: state.peer_tls has the CA" % repo_cfg)
        check(redis_tls.get("ca_file") == peer_tls.get("ca_file") and
              redis_tls.get("cert_file") == http_tls.get("cert_file") and
              redis_tls.get("key_file") == http_tls.get("key_file"),
              "%s: TLS to Redis with the same CA, its certificate as client certificate" % repo_cfg)
        # gRPC: its port with its certificate; the orchestrators checked against the CA, its
        # certificate as client certificate (they require one).
        grpc_tls, orch_tls = cfg.get("tls") or {}, cfg.get("orchestrator_tls") or {}
        check(bool(grpc_tls.get("cert_file")) and
              grpc_tls.get("cert_file") == http_tls.get("cert_file") and
              grpc_tls.get("key_file") == http_tls.get("key_file"),
              "%s: TLS on its gRPC port (tls) with its certificate: %s" % (repo_cfg, grpc_tls))
        check(bool(orch_tls.get("ca_file")) and orch_tls.get("ca_file") == peer_tls.get("ca_file")
              and orch_tls.get("cert_file") == http_tls.get("cert_file") and
              orch_tls.get("key_file") == http_tls.get("key_file"),
              "%s: TLS to the orchestrators (orchestrator_tls) with the CA and its certificate "
              "as client certificate: %s" % (repo_cfg, orch_tls))
        # PostgreSQL: verify-full against the CA, its certificate as client certificate.
        dsn = (cfg.get("usage_ledger") or {}).get("dsn", "")
        _, params = dsn_parts(dsn)
        check(params.get("sslmode") == "verify-full",
              "%s: the ledger's dsn has sslmode=verify-full: %s" % (repo_cfg, dsn))
        check(params.get("sslrootcert") == peer_tls.get("ca_file") and
              params.get("sslcert") == http_tls.get("cert_file") and
              params.get("sslkey") == http_tls.get("key_file"),
              "%s: the ledger's dsn has the CA as sslrootcert and its certificate as sslcert/sslkey"
              ": %s" % (repo_cfg, dsn))
        pg_host = urllib.parse.urlsplit(dsn).hostname
        pg_cert = os.path.splitext(os.path.basename(dict(
            a.split("=", 1) for a in (services.get("postgres") or {}).get("command") or []
            if "=" in a).get("ssl_cert_file", "")))[0]
        check(pg_host in names.get(pg_cert, []),
              "%s: certs names PostgreSQL's certificate %s (the ledger's dsn dials it): %s"
              % (repo_cfg, pg_host, names.get(pg_cert)))
        for path in (http_tls.get("cert_file"), peer_tls.get("ca_file"), grpc_tls.get("cert_file"),
                     orch_tls.get("ca_file"), orch_tls.get("cert_file"),
                     params.get("sslrootcert"), params.get("sslcert")):
            if path:
                made_file(name, svc, path)
        for path in (http_tls.get("key_file"), state.get("internal_secret_file"),
                     grpc_tls.get("key_file"), orch_tls.get("key_file"), params.get("sslkey")):
            if path:
                made_file(name, svc, path, gateway_uid)
        cert = os.path.splitext(os.path.basename(http_tls.get("cert_file", "")))[0]
        check(name in names.get(cert, []) and "127.0.0.1" in names.get(cert, []),
              "certs names %s's certificate %s (peers dial it) and 127.0.0.1 (its health "
              "check): %s" % (name, name, names.get(cert)))
        health = " ".join(((svc.get("healthcheck") or {}).get("test")) or [])
        check("https://127.0.0.1:" + http_ports.get(name, "?") + "/healthz" in health and
              "--cacert" in health, "gateways compose %s: its health check uses HTTPS with the CA"
              % name)
    redis = services.get("redis", {})
    cmd = redis.get("command") or []
    check(option(cmd, "--port") == "0", "redis: no plain TCP port (--port 0)")
    redis_address = next(iter({c.get("state", {}).get("redis", {}).get("address")
                               for _, c in gw_configs.values()}), "")
    redis_host, _, redis_port = (redis_address or ":").rpartition(":")
    check(option(cmd, "--tls-port") == redis_port,
          "redis: its TLS port is the gateways' %s" % redis_address)
    check(option(cmd, "--tls-auth-clients") == "yes", "redis: client certificates required")
    check(depends_on_completed(redis, "certs"), "redis starts once certs completed")
    for flag in ("--tls-cert-file", "--tls-key-file", "--tls-ca-cert-file"):
        path = option(cmd, flag)
        check(path is not None, "redis has %s" % flag)
        if path:
            made_file("redis", redis, path, redis_uid if flag == "--tls-key-file" else None)
    cert = os.path.splitext(os.path.basename(option(cmd, "--tls-cert-file") or ""))[0]
    check(redis_host in names.get(cert, []),
          "certs names Redis's certificate %s (the gateways dial it): %s"
          % (redis_host, names.get(cert)))
    health = json.dumps(redis.get("healthcheck") or {})
    check("--tls" in health, "redis: its health check uses TLS")

    # PostgreSQL: TLS on, its files from the certs volume (its key its user's), and an entrypoint
    # whose pg_hba.conf lets nothing in over TCP without TLS and a client certificate.
    postgres = services.get("postgres", {})
    pg_cmd = postgres.get("command") or []
    pg_settings = dict(a.split("=", 1) for a in pg_cmd if "=" in a)
    check(pg_settings.get("ssl") == "on" and
          all(pg_cmd[i - 1] == "-c" for i, a in enumerate(pg_cmd) if "=" in a),
          "postgres: -c ssl=on: %s" % pg_cmd)
    check(depends_on_completed(postgres, "certs"), "postgres starts once certs completed")
    for setting in ("ssl_cert_file", "ssl_key_file", "ssl_ca_file"):
        path = pg_settings.get(setting)
        check(path is not None, "postgres has -c %s" % setting)
        if path:
            made_file("postgres", postgres, path,
                      postgres_uid if setting == "ssl_key_file" else None)
    with open(os.path.join(DOCKER, "postgres-entrypoint")) as f:
        entry = f.read()
    hba = re.search(r"pg_hba\.conf\" <<'HBA'\n(.*?)\nHBA\n", entry, re.S)
    lines = [l.split() for l in (hba.group(1) if hba else "").splitlines() if l.strip()]
    check(hba is not None and all(l[0] == "local" or (l[0] == "hostssl" and l[4] == "cert")
                                  for l in lines) and any(l[0] == "hostssl" for l in lines),
          "postgres-entrypoint writes a pg_hba.conf with hostssl lines (cert authentication) "
          "and nothing else over TCP: %s" % lines)
    check(re.search(r"^gateways /\^gateway-\[0-9\]\+\$ switchyard$", entry, re.M) is not None,
          "postgres-entrypoint maps the gateways' certificates (CN gateway-N) to switchyard")
    check(re.search(r'exec "\$bin/postgres" .*"\$@"', entry) is not None,
          "postgres-entrypoint passes its arguments (the TLS settings) to postgres")

    # The orchestrators: gRPC over TLS with their certificates, the gateways' client
    # certificates required, TLS to the gateways; their files from a volume of their own.
    for name, (repo_cfg, cfg) in sorted(orch_configs.items()):
        svc = services.get(name) or {}
        check(depends_on_completed(svc, "certs"),
              "gateways compose %s starts once certs completed" % name)
        check(volume not in [v.split(":")[0] for v in svc.get("volumes", [])],
              "gateways compose %s does not mount the gateways' volume %s (their keys)"
              % (name, volume))
        grpc_tls, gw_tls = cfg.get("tls") or {}, cfg.get("gateway_tls") or {}
        check(bool(grpc_tls.get("cert_file")) and bool(grpc_tls.get("client_ca_file")) and
              grpc_tls.get("require_client_cert") is True,
              "%s: TLS on its gRPC port, client certificates from the CA required: %s"
              % (repo_cfg, grpc_tls))
        check(bool(gw_tls.get("ca_file")) and gw_tls.get("ca_file") == grpc_tls.get("client_ca_file")
              and gw_tls.get("cert_file") == grpc_tls.get("cert_file") and
              gw_tls.get("key_file") == grpc_tls.get("key_file"),
              "%s: TLS to the gateways (gateway_tls) with the CA and its certificate: %s"
              % (repo_cfg, gw_tls))
        for path in (grpc_tls.get("cert_file"), grpc_tls.get("client_ca_file"),
                     gw_tls.get("ca_file"), gw_tls.get("cert_file")):
            if path:
                made_file(name, svc, path, copy_of=name)
        for path in (grpc_tls.get("key_file"), gw_tls.get("key_file")):
            if path:
                made_file(name, svc, path, orchestrator_uid, copy_of=name)
        cert = os.path.splitext(os.path.basename(grpc_tls.get("cert_file", "")))[0]
        host = cfg.get("advertise_address", "").rpartition(":")[0]
        check(host in names.get(cert, []) and "127.0.0.1" in names.get(cert, []),
              "certs names %s's certificate %s (gateways dial it) and 127.0.0.1: %s"
              % (name, host, names.get(cert)))

    # Run the certs service's command (less the owners: they need root) into a temporary folder.
    tmp = tempfile.mkdtemp(prefix="switchyard-docker-tls.")
    args = [os.path.join(ROOT, CERTS_SCRIPT), "--dir", os.path.join(tmp, "tls")]
    if secret:
        args += ["--secret", secret]
    for folder, who in copies.items():
        args += ["--copy", "%s=%s" % (who, os.path.join(tmp, os.path.basename(folder)))]
    args += ["%s=%s" % (n, ",".join(s)) for n, s in names.items()]
    made = subprocess.run(args, capture_output=True, text=True)
    check(made.returncode == 0, "%s runs: %s" % (CERTS_SCRIPT, made.stderr[-2000:]))
    if made.returncode != 0:
        return None
    tls = os.path.join(tmp, "tls")
    for n, sans in names.items():
        pem = os.path.join(tls, n + ".pem")
        verify = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(tls, "ca.pem"), pem],
                                capture_output=True, text=True)
        check(verify.returncode == 0, "%s chains to the CA: %s" % (n, verify.stdout + verify.stderr))
        for host in sans:
            flag = "-checkip" if re.match(r"^[0-9.]+$", host) else "-checkhost"
            named_ok = subprocess.run(["openssl", "x509", "-in", pem, "-noout", flag, host],
                                      capture_output=True, text=True).stdout
            check("does match" in named_ok, "%s's certificate names %s: %s"
                  % (n, host, named_ok.strip()))
        key = os.path.join(tls, n + ".key")
        check(os.stat(key).st_mode & 0o777 == 0o600, "%s is mode 0600" % key)
    for folder, who in copies.items():
        copied = os.path.join(tmp, os.path.basename(folder))
        files = sorted(os.listdir(copied)) if os.path.isdir(copied) else []
        check(files == sorted(["ca.pem", who + ".pem", who + ".key"]),
              "certs --copy %s=%s holds the CA and %s's certificate and key only: %s"
              % (who, folder, who, files))
        key = os.path.join(copied, who + ".key")
        check(os.path.isfile(key) and os.stat(key).st_mode & 0o777 == 0o600,
              "%s is mode 0600" % key)
    return tls


# --- Shared libraries: each binary's NEEDED sonames against the runtime stage's packages. ---
_host = {}


def _run(args):
    return subprocess.run(args, capture_output=True, text=True)


def host_loader_paths():
    """soname -> the file the host's loader uses for it (ldconfig -p, this host's architecture)."""
    if "ldconfig" not in _host:
        arch = "x86-64" if os.uname().machine == "x86_64" else None
        paths = {}
        for line in _run(["ldconfig", "-p"]).stdout.splitlines()[1:]:
            m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)$", line)
            if m and m.group(1) not in paths and (arch is None or arch in m.group(2)):
                paths[m.group(1)] = m.group(3)
        _host["ldconfig"] = paths
    return _host["ldconfig"]


def host_packages():
    """Every installed package: {name: (depends names, required-or-essential)} and
    {virtual name: {providers}}, from one dpkg-query (version constraints and :any dropped, every
    alternative of `a | b` kept)."""
    if "packages" not in _host:
        out = _run(["dpkg-query", "-W", "-f",
                    "${Package}\t${Priority}\t${Essential}\t${Depends}, ${Pre-Depends}\t"
                    "${Provides}\n"]).stdout

        def names(field):
            # "a:any (>= 1) | b, c" -> {a, b, c}
            return {re.sub(r"\(.*?\)", "", alt).strip().split(":")[0]
                    for group in field.split(",") for alt in group.split("|")} - {""}

        packages, provides = {}, {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 5:
                continue
            name, priority, essential, depends, provided = parts
            base = priority == "required" or essential == "yes"
            old = packages.get(name, (set(), False))  # several architectures: merged
            packages[name] = (old[0] | names(depends), old[1] or base)
            for v in names(provided):
                provides.setdefault(v, set()).add(name)
        _host["packages"] = (packages, provides)
    return _host["packages"]


def package_closure(roots):
    """`roots` and every package they depend on (Depends, Pre-Depends), transitively."""
    packages, provides = host_packages()
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(packages.get(p, (set(), False))[0])
        todo.extend(provides.get(p, ()))  # a virtual package: whichever provides it here
    return seen


def owning_packages(paths):
    """{path: package} for the files dpkg -S knows (one dpkg call for all of them)."""
    wanted = sorted(set(paths) - set(_host.setdefault("owners", {})))
    if wanted:
        for line in _run(["dpkg", "-S"] + wanted).stdout.splitlines():
            if line.startswith("diversion "):
                continue
            pkgs, sep, path = line.partition(": ")
            if sep and path in wanted:
                _host["owners"][path] = pkgs.split(",")[0].strip().split(":")[0]
        for p in wanted:
            _host["owners"].setdefault(p, None)
    return {p: _host["owners"][p] for p in paths}


def path_alternatives(path):
    """The names dpkg may list a library under: as the loader has it, its real file and its
    folder's real path, each with and without /usr (Debian 12's merged /usr)."""
    out = []
    for p in (path, os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path)),
              os.path.realpath(path)):
        for q in (p, p[len("/usr"):] if p.startswith("/usr/") else "/usr" + p):
            if q not in out:
                out.append(q)
    return out


def runtime_stage_packages(ins):
    """The packages the last stage's RUN apt-get install lines name."""
    last = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    listed = set()
    for k, a in ins[last + 1:]:
        if k != "RUN":
            continue
        for cmd in re.split(r"&&|\|\||;|\|", a):
            words = cmd.split()
            if "apt-get" in words and "install" in words[words.index("apt-get"):]:
                for w in words[words.index("install", words.index("apt-get")) + 1:]:
                    if not w.startswith("-"):
                        listed.add(re.split(r"[=/]", w)[0])
    return listed


def runtime_binaries(ins, main_binary):
    """The build stage's build/bin/ files the last stage copies in (the daemon first)."""
    last = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    out = [main_binary]
    for k, a in ins[last + 1:]:
        if k != "COPY":
            continue
        parts = shlex.split(a)
        if not any(p.startswith("--from=") for p in parts):
            continue
        for s in [p for p in parts if not p.startswith("--")][:-1]:
            if s.startswith("/src/build/bin/") and os.path.basename(s) not in out:
                out.append(os.path.basename(s))
    return out


def needed_sonames(binary):
    """The DT_NEEDED sonames of an ELF file, or None when readelf cannot read it."""
    r = _run(["readelf", "-d", binary])
    if r.returncode != 0:
        return None
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)


def ldd_paths(binary):
    """soname -> path as ldd resolves them for this binary (its RUNPATH too)."""
    out = {}
    for line in _run(["ldd", binary]).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def check_runtime_libraries(name, main_binary, bin_dir):
    """Every library each binary the runtime stage copies in links (NEEDED) comes from a package
    that stage installs, one those depend on, or debian:12-slim's base (required or essential)."""
    ins = instructions(os.path.join(DOCKER, name))
    listed = runtime_stage_packages(ins)
    packages, _ = host_packages()
    for p in sorted(listed - set(packages)):
        print("note: %s installs %s, which is not installed on this host: its dependencies are "
              "not followed" % (name, p))
    provided = package_closure(listed) | package_closure(
        {p for p, (_, base) in packages.items() if base})
    for binary in runtime_binaries(ins, main_binary):
        path = os.path.join(bin_dir, binary)
        if not os.path.isfile(path):
            print("note: %s is not built; its libraries are not checked against %s"
                  % (path, name))
            continue
        sonames = needed_sonames(path)
        check(sonames is not None, "%s: readelf reads %s's dynamic section" % (name, path))
        if sonames is None:
            continue
        loader = dict(host_loader_paths())
        if any(s not in loader for s in sonames):
            loader.update(ldd_paths(path))
        candidates = {s: path_alternatives(loader[s]) for s in sonames if s in loader}
        owners = owning_packages([c for cs in candidates.values() for c in cs])
        for soname in sonames:
            package = next((owners[c] for c in candidates.get(soname, []) if owners[c]), None)
            if soname not in loader:
                check(False, "%s: %s needs %s, which this host's loader does not find (ldconfig "
                      "-p, ldd): no package to check" % (name, binary, soname))
            elif package is None:
                check(False, "%s: %s needs %s (%s), which no Debian package owns (dpkg -S)"
                      % (name, binary, soname, loader[soname]))
            else:
                check(package in provided, "%s: %s needs %s (%s), not installed in the runtime "
                      "stage" % (name, binary, soname, package))


def localized(cfg, tls_dir):
    """`cfg` with every path under the container's TLS mount point moved to tls_dir (where the
    certs service's command wrote them; copies there are the same files)."""
    text = json.dumps(cfg)
    for path in set(re.findall(r'"(/[^"]*/(?:ca\.pem|[\w.-]+\.(?:pem|key|secret)))"', text)):
        text = text.replace('"%s"' % path, json.dumps(
            os.path.join(tls_dir, os.path.basename(path))))
    return json.loads(text)


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def grpc_tls_answer(port, ca_file, server_name, cert=None, key=None):
    """Opens TLS (ALPN h2) to a gRPC port on loopback, checking the certificate against ca_file
    for server_name and presenting cert/key when given, sends HTTP/2's client preface and reads.
    Returns "answered" when the server sent HTTP/2 bytes, else why not (handshake failure, the
    server's alert, or the connection closed)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["h2"])
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(H2_PREFACE)
                data = tls.recv(9)
                return "answered" if data else "closed without an answer"
    except (OSError, ssl.SSLError) as e:
        return repr(e)


def plaintext_refused(port):
    """True when a gRPC port does not answer HTTP/2's plaintext client preface with HTTP/2
    (a TLS server answers it with an alert or closes)."""
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as raw:
            raw.sendall(H2_PREFACE)
            data = raw.recv(9)
            # An HTTP/2 frame header: 3 bytes length, type 4 (SETTINGS).
            return not (len(data) >= 4 and data[3] == 4)
    except OSError:
        return True


def check_configs_load(configs, bin_dir, tls_dir):
    """Starts the orchestrator with each container config (bounded), on loopback. Configs with
    TLS get their files from tls_dir; their gRPC port must take a TLS client that presents a
    certificate from the CA (checked for the service name) and refuse one that presents none."""
    binary = os.path.join(bin_dir, "switchyard-orchestrator")
    check(os.access(binary, os.X_OK), "%s is built" % binary)
    if not os.access(binary, os.X_OK):
        return
    for cfg in configs:
        with tempfile.TemporaryDirectory() as tmp:
            with open(cfg) as f:
                parsed = json.load(f)
            grpc_tls = parsed.get("tls") or {}
            run_cfg = cfg
            if grpc_tls or parsed.get("gateway_tls"):
                if tls_dir is None:
                    check(False, "%s: no TLS files from the certs service to start it with" % cfg)
                    continue
                # A copy beside nothing: models_file made absolute, TLS files from tls_dir.
                local = localized(parsed, tls_dir)
                local["models_file"] = os.path.normpath(
                    os.path.join(os.path.dirname(cfg), parsed["models_file"]))
                run_cfg = os.path.join(tmp, "orchestrator.json")
                with open(run_cfg, "w") as f:
                    json.dump(local, f)
            port_file = os.path.join(tmp, "port")
            log_path = os.path.join(tmp, "log")
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    [binary, "--config", run_cfg, "--no-gateways", "--listen", "127.0.0.1:0",
                     "--http-listen", "127.0.0.1:0", "--port-file", port_file,
                     # Not the container's /var/lib/switchyard on this host.
                     "--identity-key-file", os.path.join(tmp, "node-identity.key")],
                    stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if os.path.exists(port_file) and os.path.getsize(port_file) > 0:
                    break
                time.sleep(0.1)
            serving = os.path.exists(port_file) and proc.poll() is None
            if serving and grpc_tls:
                with open(port_file) as f:
                    port = f.read().strip()
                ca = os.path.join(tls_dir, "ca.pem")
                name = parsed.get("node_id")
                # With a gateway's certificate (any the CA signed, e.g. the first gateway's).
                gateway = next((n for n in ("gateway-1", "gateway-2", "gateway-3")
                                if os.path.isfile(os.path.join(tls_dir, n + ".pem"))), "gateway-1")
                with_cert = grpc_tls_answer(port, ca, name, os.path.join(tls_dir, gateway + ".pem"),
                                            os.path.join(tls_dir, gateway + ".key"))
                check(with_cert == "answered",
                      "%s: its gRPC port answers over TLS (certificate checked for %s) a client "
                      "presenting %s's certificate: %s" % (cfg, name, gateway, with_cert))
                without = grpc_tls_answer(port, ca, name)
                check(without != "answered",
                      "%s: its gRPC port refuses a TLS client without a certificate: %s"
                      % (cfg, without))
                check(plaintext_refused(port),
                      "%s: its gRPC port refuses plaintext HTTP/2" % cfg)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with open(log_path) as f:
                log_text = f.read()
            check(serving, "the orchestrator starts with %s:\n%s" % (cfg, log_text[-3000:]))
            check("model esrgan-slim-x4 ready" in log_text,
                  "%s: its warm model loads from the shared models.json" % cfg)


def check_gateway_configs_load(gw_configs, tls_dir, bin_dir):
    """Starts the gateway with each container config, its TLS files from `tls_dir`, on loopback,
    and fetches /healthz over HTTPS trusting only the CA, checking the gateway's service name."""
    binary = os.path.join(bin_dir, "switchyard-gateway")
    check(os.access(binary, os.X_OK), "%s is built" % binary)
    if not os.access(binary, os.X_OK) or tls_dir is None:
        return
    for name, (repo_cfg, cfg) in sorted(gw_configs.items()):
        with tempfile.TemporaryDirectory() as tmp:
            local = localized(cfg, tls_dir)
            local["usage_ledger"]["journal"] = os.path.join(tmp, "journal.db")
            local["usage_ledger"]["connect_timeout_ms"] = 200
            local_cfg = os.path.join(tmp, "gateway.json")
            with open(local_cfg, "w") as f:
                json.dump(local, f)
            port_file = os.path.join(tmp, "http-port")
            grpc_port_file = os.path.join(tmp, "grpc-port")
            log_path = os.path.join(tmp, "log")
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    [binary, "--config", local_cfg, "--listen", "127.0.0.1:0",
                     "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                     "--http-port-file", port_file, "--port-file", grpc_port_file],
                    stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if os.path.exists(port_file) and os.path.getsize(port_file) > 0:
                    break
                time.sleep(0.1)
            answer = None
            if proc.poll() is None and os.path.exists(port_file):
                with open(port_file) as f:
                    port = f.read().strip()
                ctx = ssl.create_default_context(cafile=os.path.join(tls_dir, "ca.pem"))
                try:
                    # /healthz, the certificate checked for 127.0.0.1 (the health check's host).
                    conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx,
                                                       timeout=10)
                    conn.request("GET", "/healthz")
                    answer = conn.getresponse().status
                    conn.close()
                    # The handshake again, the certificate checked for the service name (how
                    # the peers dial it).
                    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as raw:
                        with ctx.wrap_socket(raw, server_hostname=name):
                            pass
                except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                    answer = repr(e)
                # Its gRPC port: TLS, the certificate checked for the service name (how the
                # orchestrators dial it) and for 127.0.0.1 (the published port); no plaintext.
                with open(grpc_port_file) as f:
                    grpc_port = f.read().strip()
                ca = os.path.join(tls_dir, "ca.pem")
                for host in (name, "127.0.0.1"):
                    got = grpc_tls_answer(grpc_port, ca, host)
                    check(got == "answered", "%s: its gRPC port answers over TLS, certificate "
                          "checked for %s: %s" % (repo_cfg, host, got))
                check(plaintext_refused(grpc_port), "%s: its gRPC port refuses plaintext HTTP/2"
                      % repo_cfg)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with open(log_path) as f:
                log_text = f.read()
            check(answer == 200, "the gateway starts with %s (its TLS files from the certs "
                  "service) and answers /healthz over HTTPS: %s\n%s"
                  % (repo_cfg, answer, log_text[-3000:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", help="where switchyard-orchestrator is built")
    parser.add_argument("--model-dir", help="where scripts/prepare-models put the models")
    args = parser.parse_args()
    for name, binary in DOCKERFILES.items():
        check_dockerfile(name, binary)
    for name, package in STATE_DOCKERFILES.items():
        check_state_dockerfile(name, package)
    check_certs_dockerfile()
    orch_configs, gw_configs, tls_dir = check_compose_gateways()
    configs = check_compose() + [repo_cfg for repo_cfg, _ in orch_configs.values()]
    if args.bin_dir:
        for name, binary in DOCKERFILES.items():
            check_runtime_libraries(name, binary, args.bin_dir)
        if args.model_dir and os.path.realpath(args.model_dir) != os.path.join(ROOT, "models"):
            # The configs reach the models through the repository layout (configs/../models).
            print("note: --model-dir is not the repository's models/; the load check uses %s"
                  % os.path.join(ROOT, "models"))
        check(os.path.isfile(os.path.join(ROOT, "models", "esrgan-slim-x4.pt")),
              "models are prepared (scripts/prepare-models)")
        check_configs_load(configs, args.bin_dir, tls_dir)
        check_gateway_configs_load(gw_configs, tls_dir, args.bin_dir)
    if tls_dir is not None:
        shutil.rmtree(os.path.dirname(tls_dir), ignore_errors=True)
    print("%d passed, %d failed" % (passed, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
