#!/usr/bin/env python3
"""Upstreams that fail or differ (issues 19 and 22): what every proxy's configuration gets
when a `run.Variant` has `upstreams=True`, and, run as a script, how a slow endpoint is
balanced beside nginx.

The whole table (table.py) measures these beside nginx, HAProxy, Traefik and Pingora:
- dead: a Service of three endpoints (127.0.0.1, .2 and .3 on the origin's port), the third
  refusing; each proxy retries another endpoint its own way (erratum: its defaults, retries
  and outlier ejection; nginx: ingress-nginx's `proxy_next_upstream error timeout`, 3 tries,
  nginx's max_fails=1 fail_timeout=10s; HAProxy: `retries 2`, `option redispatch 1` and its
  health checks; Traefik: the retry middleware, 3 attempts, and its health checks; Pingora: a retry per refused
  connection, round robin);
- https: the origin over TLS, its certificate verified against a CA as origin.bench.svc;
- grpc: unary calls (grpc.health.v1.Health/Check) to tonic's health server, h2c both sides;
- stale: a copy kept from a good answer served while the origin answers 503 (erratum:
  `staleIfError`; nginx: `proxy_cache_use_stale`; the others cannot).

As a script: one slow endpoint of two (+20 ms per answer), round robin vs power of two choices
(erratum `load-balance: ewma`) vs nginx's `least_conn`. Every proxy runs one worker pinned to
core 0; the origins and the load generator share core 1. --smoke (CI): one 1-second round,
checks every answer; asserts no speed.

Usage: benches/compare/upstreams.py [--rounds N] [--seconds S] [--erratum PATH] [--smoke]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

ORIGIN_TLS, GRPC = 18093, 18094
# The TLS name the origin's certificate carries, asked for and verified by every proxy.
ORIGIN_NAME = "origin.bench.svc"
PORT_SLOW, SLOW_MS = 18192, 20
ERRATUM, NGINX, ADMIN = 18181, 18182, 18199
HOSTS = {"dead": "three.bench", "https": "tls.bench", "grpc": "grpc.bench", "stale": "stale.bench"}
# The three endpoints of the dead scenario: the third has nothing listening.
THREE = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
GRPC_PATH = "/grpc.health.v1.Health/Check"


def certificates(d):
    """A CA and a certificate it signed for ORIGIN_NAME (openssl): `ca.pem`, `origin.pem`; made
    once per folder (the origin keeps the first while the proxies' configurations change)."""
    if os.path.exists(f"{d}/origin.pem"):
        return
    sh = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
    sh("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
       "-subj", "/CN=bench CA", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem")
    sh("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={ORIGIN_NAME}",
       "-keyout", f"{d}/origin.key", "-out", f"{d}/origin.csr")
    run.write(f"{d}/san.ext", f"subjectAltName=DNS:{ORIGIN_NAME}\n")
    sh("x509", "-req", "-in", f"{d}/origin.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
       "-CAcreateserial", "-days", "2", "-extfile", f"{d}/san.ext", "-out", f"{d}/origin.pem")


def origin_listeners(d):
    """The origin's listeners besides 127.0.0.1: the second endpoint and TLS (certificates first)."""
    certificates(d)
    # TLS 1.3 offered (nginx 1.22's default lacks it): every proxy's HTTPS upstream speaks it.
    return (f"listen 127.0.0.2:{run.ORIGIN}; listen 127.0.0.1:{ORIGIN_TLS} ssl;\n"
            f"    ssl_certificate {d}/origin.pem; ssl_certificate_key {d}/origin.key; ssl_protocols TLSv1.2 TLSv1.3;")


def nginx(d):
    """nginx's servers for the upstream hosts (the plain port; gRPC on the HTTP/2 one)."""
    proxied = f'proxy_http_version 1.1; proxy_set_header Connection "";{run.NGINX_FORWARDED}'
    three = " ".join(f"server {a}:{run.ORIGIN};" for a in THREE)
    return f"""
  upstream three {{ {three} keepalive 64; }}
  upstream tls {{ server 127.0.0.1:{ORIGIN_TLS}; keepalive 64; }}
  upstream grpc {{ server 127.0.0.1:{GRPC}; keepalive 64; }}
  upstream origin_stale {{ server 127.0.0.1:{run.ORIGIN} max_fails=0; keepalive 64; }}
  server {{ listen 127.0.0.1:{run.NGINX}; server_name {HOSTS['dead']}; {proxied}
    location / {{ proxy_pass http://three; proxy_next_upstream error timeout; proxy_next_upstream_tries 3; }} }}
  server {{ listen 127.0.0.1:{run.NGINX}; server_name {HOSTS['https']}; {proxied}
    location / {{ proxy_pass https://tls; proxy_ssl_verify on; proxy_ssl_trusted_certificate {d}/ca.pem;
      proxy_ssl_name {ORIGIN_NAME}; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
      proxy_ssl_protocols TLSv1.2 TLSv1.3; }} }}
  # Asks the origin every time (no background update, no lock) and serves the copy on its 503.
  server {{ listen 127.0.0.1:{run.NGINX}; server_name {HOSTS['stale']}; {proxied}
    location / {{ proxy_pass http://origin_stale; proxy_cache errors; proxy_cache_valid 200 1s;
      proxy_cache_use_stale error timeout http_500 http_502 http_503 http_504; }} }}
  server {{ listen 127.0.0.1:{run.NGINX_H2} http2; server_name {HOSTS['grpc']};
    location / {{ grpc_pass grpc://grpc; grpc_set_header X-Request-Id $request_id; }} }}
"""


def haproxy(d):
    """HAProxy's (frontend rules, backends) for the upstream hosts."""
    rules = "".join(f"  use_backend {backend} if {{ req.hdr(host) -m str {HOSTS[name]} }}\n"
                    for name, backend in [("dead", "three"), ("https", "origin_tls"), ("grpc", "grpc")])
    servers = "".join(f"  server s{i} {a}:{run.ORIGIN} check inter 2s\n" for i, a in enumerate(THREE))
    backends = f"""
backend three
  balance roundrobin
  http-reuse always
  retries 2
  option redispatch 1
{servers}backend origin_tls
  http-reuse always
  server t 127.0.0.1:{ORIGIN_TLS} ssl verify required ca-file {d}/ca.pem sni str({ORIGIN_NAME}) verifyhost {ORIGIN_NAME}
backend grpc
  http-reuse always
  server g 127.0.0.1:{GRPC} proto h2
"""
    return rules, backends


def manifests(d):
    """erratum's Services, EndpointSlices, CA ConfigMap and Ingresses for the upstream hosts (the
    stale host is run.py's stale.bench)."""
    ca = "".join(f"    {line}\n" for line in open(f"{d}/ca.pem").read().splitlines())
    # run.bench_ingress's Ingress for `host`, its backend the Service `service`.
    ing = lambda name, host, service, annotations: run.bench_ingress(name, host, annotations).replace(
        '"name": "origin"', f'"name": "{service}"')
    ca_tls = {"backend-protocol": "HTTPS", "proxy-ssl-name": ORIGIN_NAME}
    return "".join([
        run.service("three", run.ORIGIN, THREE),
        run.service("tls", ORIGIN_TLS),
        run.service("grpc", GRPC),
        f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: ca, namespace: bench}}
data:
  ca.crt: |
{ca}---
""",
        ing("three", HOSTS["dead"], "three", {}),
        # The CA's annotation is erratum's own (ingress-nginx names a Secret instead).
        ing("tls", HOSTS["https"], "tls", ca_tls).replace(
            '"annotations": {', '"annotations": {"erratum.dev/backend-ca-configmap": "ca", '),
        ing("grpc", HOSTS["grpc"], "grpc", {"backend-protocol": "GRPC"}),
    ])


def traefik(d, dynamic):
    """Traefik's routers, services and transports for the upstream hosts (added to the file
    provider's configuration)."""
    http = dynamic["http"]
    http["middlewares"]["retry"] = {"retry": {"attempts": 3}}
    http["services"].update({
        # Active health checks as HAProxy's (`check inter 2s`): Traefik has no passive ejection.
        "three": {"loadBalancer": {"servers": [{"url": f"http://{a}:{run.ORIGIN}"} for a in THREE],
                                   "healthCheck": {"path": "/ok", "interval": "2s", "timeout": "1s"}}},
        "tls": {"loadBalancer": {"servers": [{"url": f"https://127.0.0.1:{ORIGIN_TLS}"}],
                                 "serversTransport": "origin-tls"}},
        "grpc": {"loadBalancer": {"servers": [{"url": f"h2c://127.0.0.1:{GRPC}"}]}},
    })
    http["serversTransports"] = {"origin-tls": {"serverName": ORIGIN_NAME, "rootCAs": [f"{d}/ca.pem"]}}
    for name, service, middlewares in [("dead", "three", ["retry"]), ("https", "tls", []), ("grpc", "grpc", [])]:
        http["routers"][name] = {"rule": f"Host(`{HOSTS[name]}`)", "service": service, "middlewares": middlewares,
                                 "entryPoints": ["web"]}


def pingora_args(d):
    """The Pingora peer's routes for the upstream hosts (see its --route)."""
    return ["--route", f"{HOSTS['dead']}=http://" + ",".join(f"{a}:{run.ORIGIN}" for a in THREE),
            "--route", f"{HOSTS['https']}=https://127.0.0.1:{ORIGIN_TLS}",
            "--route", f"{HOSTS['grpc']}=h2c://127.0.0.1:{GRPC}",
            "--upstream-sni", ORIGIN_NAME, "--ca-file", f"{d}/ca.pem"]


def grpc_status(port):
    """One unary call with curl through the proxy: whether it passed back grpc-status 0."""
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-",
                          "-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "@/dev/stdin",
                          "--connect-to", f"{HOSTS['grpc']}:80:127.0.0.1:{port}", f"http://{HOSTS['grpc']}{GRPC_PATH}"],
                         input=bytes(5), capture_output=True).stdout.decode(errors="replace").lower()
    return "grpc-status: 0" in out


def grpc_request(d):
    """An empty HealthCheckRequest in gRPC's framing (no compression, length 0), as a file."""
    with open(f"{d}/check.bin", "wb") as f:
        f.write(bytes(5))
    return f"{d}/check.bin"


def balancing_configs(d):
    """The slow-endpoint comparison: 127.0.0.1 answers at once (nginx), 127.0.0.2 SLOW_MS late."""
    run.write(f"{d}/origin.conf", f"""
worker_processes 1; daemon off; pid {d}/origin.pid; error_log {d}/origin.err crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{PORT_SLOW}; location = /ok {{ return 200 "{'x' * 1024}"; }} }} }}
""")
    run.write(f"{d}/nginx.conf", f"""
worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream slow_rr {{ server 127.0.0.1:{PORT_SLOW}; server 127.0.0.2:{PORT_SLOW}; keepalive 64; }}
  upstream slow_lc {{ least_conn; server 127.0.0.1:{PORT_SLOW}; server 127.0.0.2:{PORT_SLOW}; keepalive 64; }}
  proxy_http_version 1.1; proxy_set_header Connection "";{run.NGINX_FORWARDED}
  server {{ listen 127.0.0.1:{NGINX}; server_name slow-rr.bench; location / {{ proxy_pass http://slow_rr; }} }}
  server {{ listen 127.0.0.1:{NGINX}; server_name slow-p2c.bench; location / {{ proxy_pass http://slow_lc; }} }}
}}
""")
    os.makedirs(f"{d}/manifests", exist_ok=True)
    ing = lambda name, annotations: run.bench_ingress(name, f"{name}.bench", annotations).replace(
        '"name": "origin"', '"name": "slow"')
    run.write(f"{d}/manifests/slow.yaml", run.service("slow", PORT_SLOW, ["127.0.0.1", "127.0.0.2"])
              + ing("slow-rr", {}) + ing("slow-p2c", {"load-balance": "ewma"}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--erratum", default="target/dist/erratum")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.seconds = 1, 1
    d = tempfile.mkdtemp(prefix="erratum-upstreams-")
    os.chmod(d, 0o755)
    balancing_configs(d)
    procs, checks = {}, []
    try:
        procs["origin"] = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", f"{d}/origin.conf", "-p", d])
        # The slow endpoint: erratum's demo origin answering every request SLOW_MS late.
        procs["slow"] = subprocess.Popen(["taskset", "-c", "1", a.erratum, "--log-level", "error", "origin",
                                          "--addr", f"127.0.0.2:{PORT_SLOW}", "--delay-ms", str(SLOW_MS)])
        procs["erratum"] = subprocess.Popen(["taskset", "-c", "0", *run.erratum_run(a.erratum, f"{d}/manifests",
                                                                                  ERRATUM, ADMIN)])
        procs["nginx"] = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", f"{d}/nginx.conf", "-p", d])
        for port in [ERRATUM, NGINX]:
            run.wait_port(port)
        time.sleep(0.5)
        proxies = [("erratum", ERRATUM), ("nginx", NGINX)]
        print(f"\nOne slow endpoint of two (+{SLOW_MS} ms each answer): round robin vs power of two choices"
              " (erratum `load-balance: ewma`; nginx `least_conn`, its nearest)")
        print(f"rounds={a.rounds} seconds={a.seconds} connections={a.connections}\n")
        print("| proxy | balancing | req/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        slow = {}
        for _ in range(a.rounds):
            for proxy, port in proxies:
                for host in ["slow-rr.bench", "slow-p2c.bench"]:
                    slow.setdefault((proxy, host), []).append(
                        run.wrk(port, "/ok", a.seconds, a.connections, headers=[f"Host: {host}"]))
        for proxy, _ in proxies:
            for host, label in [("slow-rr.bench", "round robin"),
                                ("slow-p2c.bench", "p2c" if proxy == "erratum" else "least_conn")]:
                rs = slow[(proxy, host)]
                checks.append((f"slow {proxy} {label}: all 2xx", all(r["non2xx"] == 0 and r["total"] > 0 for r in rs)))
                med = {k: statistics.median(r[k] for r in rs) for k in ["rps", "p50", "p99"]}
                print(f"| {proxy} | {label} | {med['rps']:.0f} | {med['p50']:.2f} | {med['p99']:.2f} |")
        return run.report(checks)
    finally:
        run.stop(procs)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
