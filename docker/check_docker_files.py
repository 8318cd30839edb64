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
  their addresses and shared state (one Redis, one PostgreSQL ledger, journals on named
  volumes), Redis and PostgreSQL from Debian 12 packages and not published, and orchestrators
  that register with every gateway.
- With --bin-dir and --model-dir: each container orchestrator config really loads (the daemon
  starts with it on loopback, ephemeral ports, no gateway), so its models_file and model paths
  resolve in the same layout the images use.

Usage: check_docker_files.py [--bin-dir DIR] [--model-dir DIR]
Exit status 0 when every check passes; each failure is printed.
"""

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

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
    check(set(services) == set(gateways + orchestrators + ["redis", "postgres"]),
          "gateways compose: three gateways, two orchestrators, redis, postgres: %s"
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
    changed = {"gateway_id", "listen", "http_listen", "admin_listen", "usage_ledger", "state"}
    gw_targets, shared = [], set()
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
        shared.add(json.dumps([state, {k: v for k, v in ledger.items() if k != "journal"}],
                              sort_keys=True))
    check(len(shared) == 1, "the gateways share one Redis and one ledger: %s" % shared)
    configs = []
    for name in orchestrators:
        svc = services.get(name)
        repo_cfg, cfg = service_config("gateways compose", name, svc)
        if cfg is None:
            continue
        configs.append(repo_cfg)
        check(cfg["node_id"] == name, "%s: node_id is the service name" % repo_cfg)
        check(cfg["advertise_address"].split(":")[0] == name,
              "%s: advertises its service name" % repo_cfg)
        check(cfg["gateways"] == gw_targets, "%s: registers with every gateway %s"
              % (repo_cfg, gw_targets))
        check_identity_key_volume("gateways compose", svc, cfg, named)
    return configs


def check_configs_load(configs, bin_dir):
    """Starts the orchestrator with each container config (bounded), on loopback."""
    binary = os.path.join(bin_dir, "switchyard-orchestrator")
    check(os.access(binary, os.X_OK), "%s is built" % binary)
    if not os.access(binary, os.X_OK):
        return
    for cfg in configs:
        with tempfile.TemporaryDirectory() as tmp:
            port_file = os.path.join(tmp, "port")
            log_path = os.path.join(tmp, "log")
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    [binary, "--config", cfg, "--no-gateways", "--listen", "127.0.0.1:0",
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", help="where switchyard-orchestrator is built")
    parser.add_argument("--model-dir", help="where scripts/prepare-models put the models")
    args = parser.parse_args()
    for name, binary in DOCKERFILES.items():
        check_dockerfile(name, binary)
    for name, package in STATE_DOCKERFILES.items():
        check_state_dockerfile(name, package)
    configs = check_compose() + check_compose_gateways()
    if args.bin_dir:
        if args.model_dir and os.path.realpath(args.model_dir) != os.path.join(ROOT, "models"):
            # The configs reach the models through the repository layout (configs/../models).
            print("note: --model-dir is not the repository's models/; the load check uses %s"
                  % os.path.join(ROOT, "models"))
        check(os.path.isfile(os.path.join(ROOT, "models", "esrgan-slim-x4.pt")),
              "models are prepared (scripts/prepare-models)")
        check_configs_load(configs, args.bin_dir)
    print("%d passed, %d failed" % (passed, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
