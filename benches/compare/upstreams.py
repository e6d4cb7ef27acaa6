#!/usr/bin/env python3
"""Upstreams beside nginx (issue 19): one dead endpoint of three, an HTTPS upstream, gRPC unary.

- dead: a Service of three endpoints (127.0.0.1, .2, .3 on one port), the third refusing;
  erratum with its defaults (retries on another endpoint, outlier ejection) and nginx with
  ingress-nginx's (`proxy_next_upstream error timeout`, 3 tries; nginx's own max_fails=1
  fail_timeout=10s). Success rate, req/s, p99, CPU per request.
- https: pass-through to an origin over TLS, the certificate verified against a CA (erratum:
  `backend-protocol: HTTPS` with a CA ConfigMap; nginx: `proxy_ssl_verify on`), pooled
  connections on both.
- grpc: unary calls (grpc.health.v1.Health/Check) from h2load to tonic's health server through
  the proxy (erratum: `backend-protocol: GRPC`; nginx: `grpc_pass`), h2c on both sides.

Every proxy runs one worker pinned to core 0; the origins and the load generator share core 1.
Proxies alternate per round; medians are reported. --smoke (CI): one 1-second round, checks
that every proxy answered every scenario as configured; asserts no speed.

Usage: benches/compare/upstreams.py [--rounds N] [--seconds S] [--erratum PATH] [--grpc-origin PATH] [--smoke]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import CLK_TCK, cpu_ticks, erratum_run, pids_of, stop, wait_port, wrk, write  # noqa: E402

PORT, PORT_TLS, PORT_SLOW, GRPC = 18190, 18191, 18192, 18197
SLOW_MS = 20
ERRATUM, NGINX, NGINX_H2, ADMIN = 18181, 18182, 18184, 18199
BODY = "x" * 1024


def certificates(d):
    """A CA and a certificate it signed for origin.bench.svc (openssl)."""
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=bench CA", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=origin.bench.svc",
        "-keyout", f"{d}/origin.key", "-out", f"{d}/origin.csr")
    write(f"{d}/san.ext", "subjectAltName=DNS:origin.bench.svc\n")
    run("x509", "-req", "-in", f"{d}/origin.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{d}/san.ext", "-out", f"{d}/origin.pem")


def configs(d):
    certificates(d)
    write(f"{d}/origin.conf", f"""
worker_processes 1; daemon off; pid {d}/origin.pid; error_log {d}/origin.err crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{PORT}; listen 127.0.0.2:{PORT};
    listen 127.0.0.1:{PORT_SLOW};
    listen 127.0.0.1:{PORT_TLS} ssl; ssl_certificate {d}/origin.pem; ssl_certificate_key {d}/origin.key;
    location = /ok {{ return 200 "{BODY}"; }}
  }} }}
""")
    write(f"{d}/nginx.conf", f"""
worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream three {{ server 127.0.0.1:{PORT}; server 127.0.0.2:{PORT}; server 127.0.0.3:{PORT}; keepalive 64; }}
  upstream tls {{ server 127.0.0.1:{PORT_TLS}; keepalive 64; }}
  upstream grpc {{ server 127.0.0.1:{GRPC}; keepalive 64; }}
  upstream slow_rr {{ server 127.0.0.1:{PORT_SLOW}; server 127.0.0.2:{PORT_SLOW}; keepalive 64; }}
  upstream slow_lc {{ least_conn; server 127.0.0.1:{PORT_SLOW}; server 127.0.0.2:{PORT_SLOW}; keepalive 64; }}
  proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Real-IP $remote_addr;
  proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;
  proxy_set_header X-Request-Id $request_id;
  server {{ listen 127.0.0.1:{NGINX} default_server; server_name three.bench;
    location / {{ proxy_pass http://three; proxy_next_upstream error timeout; proxy_next_upstream_tries 3; }}
  }}
  server {{ listen 127.0.0.1:{NGINX}; server_name tls.bench;
    location / {{ proxy_pass https://tls;
      proxy_ssl_verify on; proxy_ssl_trusted_certificate {d}/ca.pem; proxy_ssl_name origin.bench.svc;
      proxy_ssl_server_name on; proxy_ssl_session_reuse on; }}
  }}
  server {{ listen 127.0.0.1:{NGINX}; server_name slow-rr.bench; location / {{ proxy_pass http://slow_rr; }} }}
  server {{ listen 127.0.0.1:{NGINX}; server_name slow-p2c.bench; location / {{ proxy_pass http://slow_lc; }} }}
  server {{ listen 127.0.0.1:{NGINX_H2} http2; server_name grpc.bench;
    location / {{ grpc_pass grpc://grpc; grpc_set_header X-Request-Id $request_id; }}
  }} }}
""")
    ca = "".join(f"    {line}\n" for line in open(f"{d}/ca.pem").read().splitlines())
    os.makedirs(f"{d}/manifests", exist_ok=True)
    svc = lambda name, port, addrs: f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: bench}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: bench, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{", ".join(f'{{addresses: ["{a}"]}}' for a in addrs)}]
---"""
    ing = lambda name, host, service, annotations: f"""
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: bench
  annotations: {{{", ".join(f'{k}: "{v}"' for k, v in annotations.items())}}}
spec:
  ingressClassName: erratum
  rules:
  - host: {host}
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}
---"""
    write(f"{d}/manifests/bench.yaml", "".join([
        svc("three", PORT, ["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
        svc("tls", PORT_TLS, ["127.0.0.1"]),
        svc("grpc", GRPC, ["127.0.0.1"]),
        svc("slow", PORT_SLOW, ["127.0.0.1", "127.0.0.2"]),
        ing("slow-rr", "slow-rr.bench", "slow", {}),
        ing("slow-p2c", "slow-p2c.bench", "slow", {"nginx.ingress.kubernetes.io/load-balance": "ewma"}),
        f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: ca, namespace: bench}}
data:
  ca.crt: |
{ca}---""",
        ing("three", "three.bench", "three", {}),
        ing("tls", "tls.bench", "tls", {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
                                         "nginx.ingress.kubernetes.io/proxy-ssl-name": "origin.bench.svc",
                                         "erratum.dev/backend-ca-configmap": "ca"}),
        ing("grpc", "grpc.bench", "grpc", {"nginx.ingress.kubernetes.io/backend-protocol": "GRPC"}),
    ]))
    # An empty HealthCheckRequest in gRPC's framing: no compression, length 0.
    with open(f"{d}/check.bin", "wb") as f:
        f.write(bytes(5))


def grpc_load(port, seconds, data):
    import re
    out = subprocess.check_output(
        ["taskset", "-c", "1", "h2load", "-D", str(seconds), "-c", "16", "-m", "10", "-d", data,
         "-H", ":authority: grpc.bench", "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{port}/grpc.health.v1.Health/Check"], text=True)
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    status = re.search(r"status codes: (\d+) 2xx", out)
    p99 = None
    return {"rps": rps, "total": int(m.group(2)), "failed": int(m.group(4)),
            "ok": int(status.group(1)) if status else 0, "p99": p99}


def grpc_answers(port):
    """One call with curl: the grpc-status the proxy passed back (0: SERVING answered)."""
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-",
                          "-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "@/dev/stdin",
                          "--connect-to", f"grpc.bench:80:127.0.0.1:{port}",
                          "http://grpc.bench/grpc.health.v1.Health/Check"],
                         input=bytes(5), capture_output=True).stdout.decode(errors="replace")
    return "grpc-status: 0" in out.lower() or ("HTTP/2 200" in out and "grpc-status" not in out.lower())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--erratum", default="target/dist/erratum")
    ap.add_argument("--grpc-origin", default="target/release/examples/grpc_origin")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.seconds = 1, 1
    d = tempfile.mkdtemp(prefix="erratum-upstreams-")
    os.chmod(d, 0o755)
    configs(d)
    procs, checks = {}, []
    try:
        procs["origin"] = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", f"{d}/origin.conf", "-p", d])
        procs["grpc"] = subprocess.Popen(["taskset", "-c", "1", a.grpc_origin, f"127.0.0.1:{GRPC}"])
        # The slow endpoint: erratum's demo origin answering every request SLOW_MS late.
        procs["slow"] = subprocess.Popen(["taskset", "-c", "1", a.erratum, "--log-level", "error", "origin",
                                          "--addr", f"127.0.0.2:{PORT_SLOW}", "--delay-ms", str(SLOW_MS)])
        procs["erratum"] = subprocess.Popen(["taskset", "-c", "0", *erratum_run(a.erratum, f"{d}/manifests", ERRATUM, ADMIN)])
        procs["nginx"] = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", f"{d}/nginx.conf", "-p", d])
        for port in [PORT, ERRATUM, NGINX]:
            wait_port(port)
        time.sleep(0.5)
        proxies = [("erratum", ERRATUM, ERRATUM), ("nginx", NGINX, NGINX_H2)]
        results = {}
        for _ in range(a.rounds):
            for proxy, port, h2port in proxies:
                pids = pids_of(procs[proxy])
                for scenario, host in [("dead", "three.bench"), ("https", "tls.bench")]:
                    before = cpu_ticks(pids)
                    r = wrk(port, "/ok", a.seconds, a.connections, headers=[f"Host: {host}"])
                    r["cpu_us"] = (cpu_ticks(pids) - before) / CLK_TCK * 1e6 / max(r["total"], 1)
                    results.setdefault((scenario, proxy), []).append(r)
                before = cpu_ticks(pids)
                r = grpc_load(h2port, a.seconds, f"{d}/check.bin")
                r["cpu_us"] = (cpu_ticks(pids) - before) / CLK_TCK * 1e6 / max(r["total"], 1)
                results.setdefault(("grpc", proxy), []).append(r)
        print(f"\nrounds={a.rounds} seconds={a.seconds} connections={a.connections} nproc={os.cpu_count()}\n")
        print("| scenario | proxy | req/s | p99 ms | CPU µs/req | failed / total | erratum/nginx req/s | erratum/nginx CPU |")
        print("|---|---|---|---|---|---|---|---|")
        names = {"dead": "one dead endpoint of three", "https": "HTTPS upstream (verified)", "grpc": "gRPC unary (h2c)"}
        for scenario in ["dead", "https", "grpc"]:
            med = {}
            for proxy, _, _ in proxies:
                rs = results[(scenario, proxy)]
                failed = sum((r.get("non2xx", 0) + (1 if r.get("socket_errors") else 0)) if scenario != "grpc"
                             else r["failed"] + (r["total"] - r["ok"]) for r in rs)
                total = sum(r["total"] for r in rs)
                med[proxy] = {"rps": statistics.median(r["rps"] for r in rs),
                              "p99": statistics.median(r["p99"] for r in rs) if scenario != "grpc" else None,
                              "cpu": statistics.median(r["cpu_us"] for r in rs), "failed": failed, "total": total}
                checks.append((f"{scenario} {proxy}: every request answered 2xx", failed == 0 and total > 0))
            for proxy, _, _ in proxies:
                m, e = med[proxy], med["erratum"]
                ratio = "" if proxy == "erratum" else f"{e['rps'] / m['rps']:.2f}"
                cpu = "" if proxy == "erratum" else f"{e['cpu'] / m['cpu']:.2f}"
                p99 = "n/a" if m["p99"] is None else f"{m['p99']:.2f}"
                print(f"| {names[scenario]} | {proxy} | {m['rps']:.0f} | {p99} | {m['cpu']:.1f} | {m['failed']} / {m['total']} | {ratio} | {cpu} |")
        for proxy, _, h2port in proxies:
            checks.append((f"grpc {proxy}: grpc-status 0 through the proxy", grpc_answers(h2port)))

        print(f"\nOne slow endpoint of two (+{SLOW_MS} ms each answer): round robin vs power of two choices"
              " (erratum `load-balance: ewma`; nginx `least_conn`, its nearest)")
        print("| proxy | balancing | req/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        slow = {}
        for _ in range(a.rounds):
            for proxy, port, _ in proxies:
                for host in ["slow-rr.bench", "slow-p2c.bench"]:
                    slow.setdefault((proxy, host), []).append(wrk(port, "/ok", a.seconds, a.connections, headers=[f"Host: {host}"]))
        for proxy, _, _ in proxies:
            for host, label in [("slow-rr.bench", "round robin"),
                                ("slow-p2c.bench", "p2c" if proxy == "erratum" else "least_conn")]:
                rs = slow[(proxy, host)]
                checks.append((f"slow {proxy} {label}: all 2xx", all(r["non2xx"] == 0 and r["total"] > 0 for r in rs)))
                med = {k: statistics.median(r[k] for r in rs) for k in ["rps", "p50", "p99"]}
                print(f"| {proxy} | {label} | {med['rps']:.0f} | {med['p50']:.2f} | {med['p99']:.2f} |")
        bad = [name for name, ok in checks if not ok]
        for name, ok in checks:
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
        return 1 if bad else 0
    finally:
        stop(procs)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
