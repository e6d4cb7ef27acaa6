#!/usr/bin/env python3
"""Serve stale on error, side by side: erratum (`staleIfError`) and nginx
(`proxy_cache_use_stale`) serving the same stale object while its origin answers 503.

A second origin (nginx, core 1) serves a 1 KiB object with `Cache-Control: max-age=1`. Both
proxies (one worker each, core 0) fetch it once while it is well; the origin is then switched
to answer every request with 503 and, once the object is past its freshness, wrk (core 1)
asks each proxy for it alternately for --rounds rounds. Each request goes to the origin,
gets its 503, and is answered with the stale copy: both proxies are configured to ask the
origin every time (nginx: no background update, no cache lock; erratum never serves a copy
without asking). HAProxy's cache has no stale-on-error, so it is not in the table.

Usage: benches/compare/stale.py [--erratum PATH] [--rounds 5] [--seconds 5] [--smoke]
--smoke (CI): one 1-second round, then checks that both proxies answered every request with
the stale 200 (exits 1 if not); never a speed.
Loopback only; stops what it starts.
"""
import argparse, os, signal, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (ports, wrk, CPU accounting)

FLAKY = 18092
STALE_NGINX = 18087
OBJECT = "/stale/object"


def flaky_conf(d, failing):
    body = "y" * 1024
    answer = 'return 503 "origin: unavailable";' if failing else (
        f'add_header Cache-Control "max-age=1" always; return 200 "{body}";')
    run.write(f"{d}/flaky.conf", f"""
worker_processes 1; daemon off; pid {d}/flaky.pid; error_log {d}/flaky.err crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{FLAKY}; location / {{ {answer} }} }} }}
""")


def configs(d):
    flaky_conf(d, failing=False)
    run.write(f"{d}/nginx-stale.conf", f"""
worker_processes 1; daemon off; pid {d}/nginx-stale.pid; error_log {d}/nginx-stale.err crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  proxy_cache_path {d}/nginx-stale-cache keys_zone=stale:10m;
  upstream flaky {{ server 127.0.0.1:{FLAKY} max_fails=0; keepalive 64; }}
  server {{ listen 127.0.0.1:{STALE_NGINX};
    proxy_http_version 1.1; proxy_set_header Connection "";{run.NGINX_FORWARDED}
    location / {{ proxy_pass http://flaky; proxy_cache stale;
      proxy_cache_use_stale error timeout http_500 http_502 http_503 http_504; }}
  }} }}
""")
    os.makedirs(f"{d}/manifests", exist_ok=True)
    run.write(f"{d}/manifests/stale.yaml", run.service("flaky", FLAKY, namespace="stale") + f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: flaky, namespace: stale}}
spec:
  ingressClassName: erratum
  rules:
  - http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: flaky, port: {{number: 80}}}}}}}}]}}
---
apiVersion: erratum.dev/v1alpha1
kind: ErrorPagePolicy
metadata: {{name: stale-if-error, namespace: stale}}
spec:
  staleIfError: {{maxStaleSeconds: 3600}}
---
""")


def fetch(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{OBJECT}", timeout=5) as r:
            return r.status, r.headers.get("x-cache") or r.headers.get("x-cache-status") or ""
    except urllib.error.HTTPError as e:
        return e.code, ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--erratum", default="target/dist/erratum")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.seconds = 1, 1
    d = tempfile.mkdtemp(prefix="erratum-stale-")
    os.chmod(d, 0o755)  # nginx's worker (nobody) writes its cache folder
    configs(d)
    started = []

    def start(cmd, core):
        p = subprocess.Popen(["taskset", "-c", core, *cmd], stdout=subprocess.DEVNULL, start_new_session=True)
        started.append(p)
        return p

    results = {"erratum": [], "nginx": []}
    failures = []
    try:
        origin = start(["nginx", "-c", f"{d}/flaky.conf"], "1")
        run.wait_port(FLAKY)
        proxies = {
            "erratum": (start(run.erratum_run(a.erratum, f"{d}/manifests", admin=0), "0"), run.ERRATUM),
            "nginx": (start(["nginx", "-c", f"{d}/nginx-stale.conf"], "0"), STALE_NGINX),
        }
        for name, (_, port) in proxies.items():
            run.wait_port(port, OBJECT)
            status, _ = fetch(port)
            if status != 200:
                failures.append(f"{name}: the object was not fetched while the origin was well ({status})")
        # The origin fails from now on; the copies go stale after their max-age=1.
        flaky_conf(d, failing=True)
        subprocess.run(["nginx", "-c", f"{d}/flaky.conf", "-s", "reload"], check=True, stderr=subprocess.DEVNULL)
        time.sleep(2.5)
        for name, (_, port) in proxies.items():
            status, cache = fetch(port)
            if status != 200:
                failures.append(f"{name}: no stale copy ({status})")
            if name == "erratum" and cache != "StaleHit from erratum":
                failures.append(f"erratum: X-Cache {cache!r}")
        for _ in range(a.rounds):
            for name, (proc, port) in proxies.items():
                run.wrk(port, OBJECT, 1, a.connections)  # warm-up
                res = run.measured(proc, lambda: run.wrk(port, OBJECT, a.seconds, a.connections))
                if res["non2xx"] or res["socket_errors"]:
                    failures.append(f"{name}: {res['non2xx']} non-2xx, socket errors {res['socket_errors']!r}")
                results[name].append(res)
    finally:
        for p in started:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
            except Exception:
                pass
    print(f"stale hit {OBJECT} (origin answers 503, copy past max-age=1): median of {a.rounds} rounds "
          f"of {a.seconds} s, wrk -c{a.connections}")
    print(f"{'proxy':<10} {'req/s':>9} {'CPU us/req':>11} {'p50 ms':>8} {'p99 ms':>8}")
    for name, rows in results.items():
        if rows:
            med = lambda k: statistics.median(r[k] for r in rows)
            print(f"{name:<10} {med('rps'):>9.0f} {med('cpu_us'):>11.2f} {med('p50'):>8.2f} {med('p99'):>8.2f}")
    print("haproxy    cannot: its cache has no stale-on-error")
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
