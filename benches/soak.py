#!/usr/bin/env python3
"""Soak test: mixed traffic with config churn against one erratum, reported every minute.

    python3 benches/soak.py [--minutes 10] [--workers 2] [--churn-hz 10]

Starts on 127.0.0.1 only: erratum's built-in origin (`erratum origin`) and `erratum run`
on a temporary manifests folder (release build; built first if missing). Then, each minute:

  - wrk (HTTP/1.1, 16 connections): pass-through 200s, 503s replaced by a policy page,
    cached 404s (1,000 distinct URLs) and 16 KiB bodies, mixed by a Lua script that counts
    every status outside the expected set;
  - h2load (HTTP/2 cleartext, 2 connections x 8 streams) on pass-through;
  - WebSocket-style upgrades (Upgrade: websocket, echoed bytes) in a loop;
  - the manifests rewritten --churn-hz times a second (a new route and page version each
    time; every 10th write invalid, which must change nothing);

and prints requests, unexpected errors, p99 per client and erratum's RSS. Exit status 1 when
any unexpected error happened. Needs wrk and h2load (benches/compare/setup.sh installs them).
"""

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare"))
from run import rss_kib  # noqa: E402  (one copy of the /proc reader)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "erratum")

WRK_SCRIPT = r"""
local paths = {}
for i = 1, 1000 do paths[#paths + 1] = "/missing/" .. i end
local n = 0
unexpected = 0
function request()
  n = n + 1
  local k = n % 10
  local path
  if k < 5 then path = "/ok"
  elseif k < 7 then path = paths[(n % 1000) + 1]
  elseif k < 8 then path = "/unavailable"
  else path = "/bytes/16384" end
  return wrk.format("GET", path, {["Host"] = "soak.example"})
end
function response(status, headers, body)
  if status ~= 200 and status ~= 404 and status ~= 503 then unexpected = unexpected + 1 end
end
function setup(thread) threads = threads or {}; table.insert(threads, thread) end
function done(summary, latency, requests)
  local u = 0
  for _, t in ipairs(threads) do u = u + t:get("unexpected") end
  io.write(string.format("SOAK requests=%d errors=%d timeouts=%d unexpected=%d p99_us=%d\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, u, latency:percentile(99)))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"not ready: {url}")


def manifests(origin_port, version, broken=False):
    """The soak's objects; `broken` makes the policy invalid (code 999), which must keep its
    last good version serving."""
    code = "999" if broken else "503"
    return f"""apiVersion: v1
kind: Service
metadata: {{name: web, namespace: soak}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: soak, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {origin_port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: soak, namespace: soak}}
spec:
  ingressClassName: erratum
  rules:
  - host: soak.example
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
      - {{path: /v{version}, pathType: Exact, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
---
apiVersion: erratum.dev/v1alpha1
kind: ErrorPagePolicy
metadata: {{name: pages, namespace: soak}}
spec:
  errorResponses:
  - codes: ['{code}']
    page: {{inline: '<h1>soak page v{version}</h1>'}}
"""


class Churn(threading.Thread):
    """Rewrites the manifests `hz` times a second; every 10th write is invalid."""

    def __init__(self, folder, origin_port, hz):
        super().__init__(daemon=True)
        self.folder, self.origin_port, self.hz = folder, origin_port, hz
        self.writes = 0
        self.stop = threading.Event()

    def run(self):
        path = os.path.join(self.folder, "soak.yaml")
        while not self.stop.is_set():
            self.writes += 1
            body = manifests(self.origin_port, self.writes, broken=self.writes % 10 == 0)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(body)
            os.replace(tmp, path)  # atomic, like a ConfigMap volume update
            time.sleep(1.0 / self.hz)


class Upgrades(threading.Thread):
    """Upgrade handshakes (Upgrade: websocket) and echoed messages, in a loop."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.ok = self.failed = 0
        self.stop = threading.Event()

    def once(self):
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(
                (
                    "GET /ws HTTP/1.1\r\nHost: soak.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("closed during the handshake")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                raise OSError(head[:40])
            rest = head.split(b"\r\n\r\n", 1)[1]
            for i in range(20):
                msg = f"message {i}\n".encode()
                s.sendall(msg)
                got = rest
                while len(got) < len(msg):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise OSError("closed mid-echo")
                    got += chunk
                if got[: len(msg)] != msg:
                    raise OSError(f"echo mismatch {got!r}")
                rest = got[len(msg):]

    def run(self):
        while not self.stop.is_set():
            try:
                self.once()
                self.ok += 1
            except OSError as e:
                self.failed += 1
                print(f"  upgrade failed: {e}", file=sys.stderr)


def run_wrk(port, seconds, script):
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "--timeout", "5s", "-s", script, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=False,
    ).stdout
    m = re.search(r"SOAK requests=(\d+) errors=(\d+) timeouts=(\d+) unexpected=(\d+) p99_us=(\d+)", out)
    if not m:
        return {"requests": 0, "errors": 1, "p99_ms": None, "raw": out[-400:]}
    req, err, tmo, unexp, p99 = map(int, m.groups())
    return {"requests": req, "errors": err + tmo + unexp, "p99_ms": p99 / 1000}


def run_h2load(port, seconds):
    out = subprocess.run(
        ["h2load", "-c2", "-m8", "-D", str(seconds), "-H", ":authority: soak.example", f"http://127.0.0.1:{port}/ok"],
        capture_output=True, text=True, check=False,
    ).stdout
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    p99 = None
    # h2load prints min/max/mean/sd; no percentile: report the max request time as the tail.
    t = re.search(r"time for request:\s+\S+\s+(\S+)", out)
    if t:
        v = t.group(1)
        p99 = float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
    if not m:
        return {"requests": 0, "errors": 1, "max_ms": None}
    done, ok, failed, errored, timeout = map(int, m.groups())
    return {"requests": done, "errors": failed + errored + timeout + (done - ok), "max_ms": p99}


def cache_mib(admin_port):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    m = re.search(r"^erratum_error_cache_bytes (\S+)", text, re.M)
    return round(float(m.group(1)) / 2**20, 1) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--churn-hz", type=float, default=10)
    ap.add_argument("--json", help="write the per-minute results here")
    ap.add_argument("--erratum", default=BINARY, help="the binary (default: the release build)")
    args = ap.parse_args()
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run benches/compare/setup.sh")
    if not os.path.exists(args.erratum):
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)

    folder = tempfile.mkdtemp(prefix="erratum-soak-")
    origin_port, http_port, admin_port = free_port(), free_port(), free_port()
    with open(os.path.join(folder, "soak.yaml"), "w") as f:
        f.write(manifests(origin_port, 0))
    script = os.path.join(folder, "mix.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    procs = []
    try:
        procs.append(subprocess.Popen([args.erratum, "origin", "--addr", f"127.0.0.1:{origin_port}"], stderr=subprocess.DEVNULL))
        erratum = subprocess.Popen(
            [args.erratum, "run", "--manifests", folder, "--http-addr", f"127.0.0.1:{http_port}", "--https-addr", "off",
             "--admin-addr", f"127.0.0.1:{admin_port}", "--workers", str(args.workers), "--log-level", "warn"],
            stderr=subprocess.DEVNULL,
        )
        procs.append(erratum)
        wait_http(f"http://127.0.0.1:{admin_port}/readyz")
        churn, upgrades = Churn(folder, origin_port, args.churn_hz), Upgrades(http_port)
        churn.start()
        upgrades.start()
        rows = []
        print(f"soak: {args.minutes} min, erratum --workers {args.workers}, churn {args.churn_hz}/s; pid {erratum.pid}")
        print("| minute | HTTP/1.1 req | errors | p99 ms | HTTP/2 req | errors | max ms | upgrades ok/failed | config writes | RSS MiB | error cache MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for minute in range(1, args.minutes + 1):
            result = {}
            h2 = threading.Thread(target=lambda: result.update(h2=run_h2load(http_port, 58)))
            h2.start()
            h1 = run_wrk(http_port, 58, script)
            h2.join()
            time.sleep(1)
            rss = rss_kib(erratum.pid) / 1024
            row = {
                "minute": minute, "h1": h1, "h2": result["h2"], "upgrades_ok": upgrades.ok,
                "upgrades_failed": upgrades.failed, "config_writes": churn.writes, "rss_mib": round(rss, 1),
                "cache_mib": cache_mib(admin_port),
            }
            rows.append(row)
            print(
                f"| {minute} | {h1['requests']} | {h1['errors']} | {h1['p99_ms']} | {row['h2']['requests']} | "
                f"{row['h2']['errors']} | {row['h2']['max_ms']} | {upgrades.ok}/{upgrades.failed} | {churn.writes} | {rss:.1f} | {row['cache_mib']} |",
                flush=True,
            )
        churn.stop.set()
        upgrades.stop.set()
        upgrades.join(timeout=10)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()
        errors = sum(r["h1"]["errors"] + r["h2"]["errors"] for r in rows) + upgrades.failed
        if erratum.poll() is not None:
            print(f"erratum exited with {erratum.returncode}")
            errors += 1
        rss = [r["rss_mib"] for r in rows]
        warm = rss[1:] or rss
        print(f"\nunexpected errors: {errors}; RSS after the first minute: min {min(warm)} max {max(warm)} MiB")
        tables = re.search(r"^erratum_table_generation (\d+)", metrics, re.M)
        print(f"tables published: {tables.group(1) if tables else '?'}; config writes: {churn.writes}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return 1 if errors else 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
