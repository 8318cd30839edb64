#!/usr/bin/env python3
"""Old vs new gateway, by hand: the key before the body, the per-address connection cap, /status.json
on the public port, and /healthz while handlers parse big JSON bodies. Usage:
http_old_vs_new.py BIN_DIR [new] (BIN_DIR holds switchyard-gateway; "new" for this branch's build)."""
import hashlib, json, os, socket, subprocess, sys, tempfile, threading, time

bin_dir, new = sys.argv[1], len(sys.argv) > 2
KEY = "sy_repro_key_0123456789abcdef"
tmp = tempfile.mkdtemp()
open(f"{tmp}/keys.json", "w").write(json.dumps(
    {"keys": [{"id": "a", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]}))
def start(extra):
    cfg = {"gateway_id": "gw", "listen": "127.0.0.1:0", "http_listen": "127.0.0.1:0", **extra}
    if new: cfg["admin_listen"] = "127.0.0.1:0"
    if new: cfg["http_max_connections_per_ip"] = 64
    name = f"{tmp}/gw{len(os.listdir(tmp))}"
    open(name + ".json", "w").write(json.dumps(cfg))
    p = subprocess.Popen([f"{bin_dir}/switchyard-gateway", "--config", name + ".json",
                          "--http-port-file", name + ".hp"], stdout=open(name + ".log", "w"),
                         stderr=subprocess.STDOUT)
    for _ in range(200):
        if os.path.exists(name + ".hp") and os.path.getsize(name + ".hp") > 0: break
        time.sleep(0.05)
    return p, int(open(name + ".hp").read())

def conn(port, src="127.0.0.1", timeout=10):
    s = socket.socket(); s.settimeout(timeout); s.bind((src, 0)); s.connect(("127.0.0.1", port))
    return s

def read_all(s):
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b: break
            out += b
    except (socket.timeout, ConnectionResetError) as e:
        out += f" <{type(e).__name__}>".encode()
    return out

p, port = start({"api_keys_file": f"{tmp}/keys.json"})
for length in (209715200, 52428800):
    s = conn(port); t = time.time()
    s.sendall(f"POST /upscale HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\nab".encode())
    r = read_all(s)
    print(f"no key, Content-Length {length}: after {time.time()-t:.2f} s: {r[:60]!r}")
p.terminate(); p.wait()

p, port = start({})
held = []
for i in range(100):
    try:
        s = conn(port, "127.0.0.2", 3)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        if s.recv(100).startswith(b"HTTP/1.1 200"): held.append(s)
    except OSError:
        pass
print(f"connections from 127.0.0.2 served and held open: {len(held)} of 100")
for s in held: s.close()
s = conn(port); s.sendall(b"GET /status.json HTTP/1.0\r\n\r\n")
print("GET /status.json on the public port:", read_all(s)[:40])

# Health while handlers parse big JSON bodies (a 60 MB array of numbers each).
body = ('{"model_id":"m","prompt":"p","loras":[' + ",".join(["1"] * 30_000_000) + ']}').encode()
def heavy():
    for _ in range(2):
        s = conn(port, "127.0.0.3", 60)
        s.sendall(b"POST /text-to-image HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        read_all(s)
ts = [threading.Thread(target=heavy) for _ in range(4)]
for t in ts: t.start()
worst = 0; end = time.time() + 8
while time.time() < end and any(t.is_alive() for t in ts):
    t0 = time.time(); s = conn(port); s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n"); read_all(s)
    worst = max(worst, time.time() - t0); time.sleep(0.05)
for t in ts: t.join()
print(f"/healthz while 4 clients post 60 MB JSON bodies: slowest {worst*1000:.0f} ms")
p.terminate(); p.wait()
