#!/usr/bin/env python3
"""Side-by-side load comparison: erratum vs nginx vs HAProxy on one origin, on loopback.

Installs nothing itself: run `benches/compare/setup.sh` once (Debian packages nginx,
haproxy, wrk, h2load; erratum built with the shipping `dist` profile). Every proxy runs one
worker pinned to core 0; the origin (nginx) and wrk share core 1. Proxies run alternately (A B C, A B C, ...) and the median of the rounds is reported,
with CPU time per request read from /proc/PID/stat (user+sys of every process of the proxy).

Usage: benches/compare/run.py [--rounds N] [--seconds S] [--connections C] [--erratum PATH] [--smoke]
Traffic goes to 127.0.0.1 only; everything started is stopped at the end.

--smoke (CI): one 1-second round of everything, then checks that every proxy answered every
scenario as configured (statuses, no failed requests) and exits 1 if not. It checks that the
harness works, never a speed.
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

ORIGIN, ERRATUM, NGINX, HAPROXY, ADMIN = 18090, 18081, 18082, 18083, 18091
NGINX_H2, HAPROXY_H2, ERRATUM_10K, ADMIN_10K = 18084, 18085, 18086, 18096
PAGE = "<!DOCTYPE html><html><head><title>Sorry</title></head><body><h1>We are having trouble</h1></body></html>\n"
SCENARIOS = [
    ("pass-through 200 (1 KiB)", "/ok"),
    ("upstream 503 -> custom page", "/boom"),
    ("cached 404", "/missing/page"),
    ("upstream refused -> 502 page", "/refused/x"),
]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The user "bench" with password "secret", as `htpasswd -m` writes it (apr1: 1,000 MD5 rounds).
BENCH_APR1 = "$apr1$6S7jGXRk$TeAwbUkxGMztPIzTHJAxa."
BENCH_BASIC = "Authorization: Basic YmVuY2g6c2VjcmV0"


def erratum_run(binary, manifests, port=ERRATUM, admin=ADMIN, extra=(), workers=1, https=None):
    """erratum serving the folder `manifests` on `port`: one worker, plain HTTP only unless
    `https` names a port, errors logged only (the command every script of the harness runs it
    with; `admin` 0 is any port)."""
    https_addr = f"127.0.0.1:{https}" if https else "off"
    return [binary, "--log-level", "error", "run", "--manifests", manifests, "--workers", str(workers),
            "--http-addr", f"127.0.0.1:{port}", "--https-addr", https_addr, "--admin-addr", f"127.0.0.1:{admin}",
            *extra]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


# What every ingress adds to a proxied request, and erratum always does: nginx and HAProxy
# are configured to add the same fields (ingress-nginx sets them by default), so that all three
# do the same job. `--bare-peers` leaves them out (the comparison before session 5).
NGINX_FORWARDED = """
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;
    proxy_set_header X-Request-Id $request_id;"""
HAPROXY_FORWARDED = """
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Request-Id %[uuid()]"""


# The annotated Ingresses of the bench table, one host each, every path to the origin:
# (name, host, annotations, paths as (path, pathType)).
NGINX_ANN = "nginx.ingress.kubernetes.io/"
BENCH_INGRESSES = [
    ("secure", "secure.bench", {"force-ssl-redirect": "true"}),
    ("ranges", "ranges.bench", {"allowlist-source-range": "10.0.0.0/8, 127.0.0.1"}),
    ("limited", "limited.bench", {"limit-rps": "100000000"}),
    ("cors", "cors.bench", {"enable-cors": "true", "cors-allow-origin": "https://*.bench"}),
    ("auth", "auth.bench", {"auth-url": f"http://127.0.0.1:{ORIGIN}/auth"}),
    ("basic", "basic.bench", {"auth-type": "basic", "auth-secret": "users"}),
    ("plain", "plain.bench", {}),
    ("maintenance", "maint.bench", {}),
    # A route whose policy keeps copies to serve stale on error (`staleIfError`): pass-through
    # with the feature on, beside plain.bench with it off.
    ("stale", "stale.bench", {}),
    ("canary-main", "canary.bench", {}),
    ("canary", "canary.bench", {"canary": "true", "canary-by-header": "X-Canary", "canary-weight": "0"}),
    ("rewrite", "rewrite.bench", {"rewrite-target": "/$1"},
     [("/app/(.*)", "ImplementationSpecific"), ("/v[0-9]+/(.*)", "ImplementationSpecific")]),
]


def service(name, port, addrs=("127.0.0.1",), namespace="bench"):
    """A Service and its EndpointSlice as YAML: `addrs` on `port`, every one ready (what the
    manifests of every harness script give erratum for an origin)."""
    endpoints = ", ".join(f'{{addresses: ["{a}"]}}' for a in addrs)
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{endpoints}]
---
"""


def bench_ingress(name, host, annotations, paths=(("/", "Prefix"),)):
    """One Ingress of BENCH_INGRESSES as YAML (JSON is YAML's flow style)."""
    meta = {"name": name, "namespace": "bench"}
    if annotations:
        meta["annotations"] = {NGINX_ANN + k: v for k, v in annotations.items()}
    backend = {"service": {"name": "origin", "port": {"number": 80}}}
    rule = {"http": {"paths": [{"path": p, "pathType": t, "backend": backend} for p, t in paths]}}
    if host:
        rule["host"] = host
    spec = {"ingressClassName": "erratum", "rules": [rule]}
    return (f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {json.dumps(meta)}\n"
            f"spec: {json.dumps(spec)}\n---\n")


class Variant:
    """What a run of the table changes in every proxy's configuration (benches/compare/table.py):
    worker count, an access log, N regular-expression routes before the catch-all, a TLS
    listener (HTTP/2 and HTTP/1.1 by ALPN) with the one ECDSA P-256 certificate of `tls_pem` /
    `tls_key`, the upstream hosts of upstreams.py (a dead endpoint of three, an HTTPS origin,
    gRPC, a stale copy). The defaults are run.py's configuration."""

    def __init__(self, workers=1, access_log=False, regex_routes=0, tls=None, upstreams=False):
        self.workers, self.access_log, self.regex_routes = workers, access_log, regex_routes
        self.upstreams = upstreams
        # (port per proxy name, certificate path, key path) or None.
        self.tls = tls


def regex_paths(n):
    """The regular-expression routes of a Variant: /r0/..., /r1/..., each with a capture like
    ingress-nginx's `use-regex` paths; the bench's requests match the last."""
    return [f"/r{i}/(.*)" for i in range(n)]


def certificate(d):
    """One ECDSA P-256 certificate for every proxy (openssl), for the bench hosts and
    127.0.0.1; `bench.pem` holds both for HAProxy."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=plain.bench", "-addext",
                    "subjectAltName=DNS:plain.bench,DNS:*.bench,IP:127.0.0.1",
                    "-keyout", f"{d}/bench.key", "-out", f"{d}/bench.crt"], check=True, capture_output=True)
    write(f"{d}/bench.pem", open(f"{d}/bench.crt").read() + open(f"{d}/bench.key").read())
    return f"{d}/bench.crt", f"{d}/bench.key"


def tls_secret(d):
    """The certificate of `certificate` as a kubernetes.io/tls Secret, and an Ingress whose TLS
    entry has no hosts: erratum's default certificate (like ingress-nginx's
    `--default-ssl-certificate`), served whatever the client's SNI."""
    indent = lambda path: "".join(f"    {l}\n" for l in open(path).read().splitlines())
    return (f"apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: bench-tls, namespace: bench}}\n"
            f"stringData:\n  tls.crt: |\n{indent(d + '/bench.crt')}  tls.key: |\n{indent(d + '/bench.key')}---\n"
            + bench_ingress("tls-default", "tls-default.bench", {}).replace(
                '"rules"', '"tls": [{"secretName": "bench-tls"}], "rules"'))


def configs(d, forwarded=True, variant=None):
    v = variant or Variant()
    # upstreams.py imports this module: imported here, once both are loaded.
    import upstreams
    up = {"origin": upstreams.origin_listeners(d), "nginx": upstreams.nginx(d), "haproxy": upstreams.haproxy(d),
          "manifests": upstreams.manifests(d)} if v.upstreams else {"origin": "", "nginx": "", "haproxy": ("", ""),
                                                                   "manifests": ""}
    tls_port = lambda name: v.tls[0][name] if v.tls else None
    os.makedirs(f"{d}/pages", exist_ok=True)
    os.makedirs(f"{d}/manifests", exist_ok=True)
    write(f"{d}/pages/503.html", PAGE)
    write(f"{d}/pages/502.html", PAGE)
    write(f"{d}/pages/503.http",
          f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/html\r\ncontent-length: {len(PAGE)}\r\n\r\n" + PAGE)
    body = "x" * 1024
    write(f"{d}/origin.conf", f"""
worker_processes 1; daemon off; pid {d}/origin.pid; error_log {d}/origin.err crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{ORIGIN}; {up['origin']}
    location = /ok {{ return 200 "{body}"; }}
    location /missing/ {{ return 404 "origin: not found"; }}
    location = /boom {{ return 503 "origin: unavailable"; }}
    # Well unless asked to fail: a stale hit is the copy kept from a request without X-Fail.
    location = /flaky {{ if ($http_x_fail) {{ return 503 "origin: unavailable"; }} return 200 "{body}"; }}
    location ~ ^/r[0-9]+/ {{ return 200 "{body}"; }}
    # The custom page for proxies that fetch it from a service (Traefik's errors middleware).
    location = /page.html {{ default_type text/html; return 200 {json.dumps(PAGE)}; }}
    location / {{ return 200 "ok"; }}
  }} }}
""")
    # ingress-nginx's regex locations are case-insensitive (`~*`), tried in order after prefixes.
    nginx_regex = "".join(f"    location ~* ^{p} {{ proxy_pass http://origin; }}\n" for p in regex_paths(v.regex_routes))
    # nginx 1.22's default `ssl_protocols` lacks TLSv1.3 (added to it in 1.23.4): without this
    # line every TLS row would compare nginx's TLS 1.2 with the others' TLS 1.3. ingress-nginx's
    # default is the same pair.
    nginx_tls = (f"listen 127.0.0.1:{tls_port('nginx')} ssl http2; ssl_certificate {v.tls[1]}; ssl_certificate_key {v.tls[2]};"
                 " ssl_protocols TLSv1.2 TLSv1.3;" if v.tls else "")
    # Buffered like erratum's writer thread batches its lines (ingress-nginx's default is unbuffered).
    nginx_log = f"access_log {d}/nginx-access.log combined buffer=64k flush=1s;" if v.access_log else "access_log off;"
    write(f"{d}/nginx.conf", f"""
worker_processes {v.workers}; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err crit;
events {{ worker_connections 4096; }}
http {{ {nginx_log} keepalive_requests 1000000;
  proxy_cache_path {d}/nginx-cache keys_zone=errors:10m;
  upstream origin {{ server 127.0.0.1:{ORIGIN}; keepalive 64; }}
  upstream dead {{ server 127.0.0.1:1; }}
  server {{ listen 127.0.0.1:{NGINX}; listen 127.0.0.1:{NGINX_H2} http2; {nginx_tls}
    proxy_http_version 1.1; proxy_set_header Connection "";{NGINX_FORWARDED if forwarded else ""}
    proxy_intercept_errors on;
    error_page 502 /502.html; error_page 503 /503.html;
    location = /502.html {{ internal; root {d}/pages; }}
    location = /503.html {{ internal; root {d}/pages; }}
    location /refused/ {{ proxy_pass http://dead; }}
{nginx_regex}    location / {{ proxy_pass http://origin; proxy_cache errors; proxy_cache_valid 404 10s; }}
  }}
  # ingress-nginx's ssl-redirect for a host with TLS, as plain nginx says it.
  server {{ listen 127.0.0.1:{NGINX}; server_name secure.bench; return 308 https://$host$request_uri; }}
{up['nginx']}}}
""")
    haproxy_tls = f"\n  bind 127.0.0.1:{tls_port('haproxy')} ssl crt {d}/bench.pem alpn h2,http/1.1" if v.tls else ""
    haproxy_regex = "".join(f"  use_backend origin if {{ path_reg ^{p} }}\n" for p in regex_paths(v.regex_routes))
    # HAProxy logs to syslog or a stream only: standard output, which table.py sends to a file.
    haproxy_log = ("\n  log stdout format raw local0 info", "\n  log global\n  option httplog") if v.access_log else ("", "")
    write(f"{d}/haproxy.cfg", f"""
global
  nbthread {v.workers}
  maxconn 4096{haproxy_log[0]}
defaults
  mode http{haproxy_log[1]}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend fe{HAPROXY_FORWARDED if forwarded else ""}
  bind 127.0.0.1:{HAPROXY}
  bind 127.0.0.1:{HAPROXY_H2} proto h2{haproxy_tls}
  http-request redirect scheme https code 308 if {{ hdr(host) -m str secure.bench }}
  use_backend dead if {{ path_beg /refused/ }}
{up['haproxy'][0]}{haproxy_regex}  default_backend origin
backend origin
  http-reuse always
  server o 127.0.0.1:{ORIGIN}
  http-response return status 503 content-type text/html file {d}/pages/503.html if {{ status 503 }}
backend dead
  retries 0
  server d 127.0.0.1:1
  errorfile 503 {d}/pages/503.http
{up['haproxy'][1]}""")
    write(f"{d}/manifests/bench.yaml", service("origin", ORIGIN) + service("dead", 1) + f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: bench, namespace: bench}}
spec:
  ingressClassName: erratum
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: origin, port: {{number: 80}}}}}}}}
      - {{path: /refused, pathType: Prefix, backend: {{service: {{name: dead, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: users, namespace: bench}}
type: Opaque
stringData: {{auth: "bench:{BENCH_APR1}"}}
---
apiVersion: erratum.dev/v1alpha1
kind: ErrorPagePolicy
metadata: {{name: bench, namespace: bench}}
spec:
  errorResponses:
  - codes: ["502", "503"]
    errorCachingMinTTLSeconds: 0
    page: {{inline: {PAGE.strip()!r}, contentType: text/html}}
  - codes: ["404"]
    errorCachingMinTTLSeconds: 10
---
apiVersion: erratum.dev/v1alpha1
kind: ErrorPagePolicy
metadata: {{name: maintenance, namespace: bench}}
spec:
  targetRefs: [{{name: maintenance}}]
  maintenance:
    enabled: true
    retryAfterSeconds: 600
    bypass: {{headers: [{{name: X-Bypass, value: "yes"}}]}}
    page: {{inline: {PAGE.strip()!r}, contentType: text/html}}
---
apiVersion: erratum.dev/v1alpha1
kind: ErrorPagePolicy
metadata: {{name: stale, namespace: bench}}
spec:
  targetRefs: [{{name: stale}}]
  staleIfError: {{maxStaleSeconds: 600}}
---
""" + "".join(bench_ingress(*i) for i in BENCH_INGRESSES)
          # The regex routes share the default host with the "bench" Ingress: `use-regex` makes
          # every path of the host a regex, longest first (ingress-nginx's ordering).
          + (bench_ingress("regex", None, {"use-regex": "true"},
                           [(p, "ImplementationSpecific") for p in regex_paths(v.regex_routes)]) if v.regex_routes else "")
          + (tls_secret(d) if v.tls else "") + up["manifests"])


def pids_of(proc):
    """The process and its children (nginx master + worker)."""
    out = {proc.pid}
    try:
        for line in subprocess.check_output(["ps", "-o", "pid=", "--ppid", str(proc.pid)], text=True).split():
            out.add(int(line))
    except subprocess.CalledProcessError:
        pass
    return out


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return total


def wait_port(port, path="/", timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


def wrk(port, path, seconds, connections, headers=()):
    extra = [a for h in headers for a in ("-H", h)]
    out = subprocess.check_output(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *extra,
         f"http://127.0.0.1:{port}{path}"],
        text=True)
    return parse_wrk(out)


def parse_wrk(out):
    """wrk's report: req/s, requests, p50/p99 ms, non-2xx/3xx answers, socket errors."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "total": total, "p50": lat(50), "p99": lat(99),
            "non2xx": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else ""}


def h2load(port, path, seconds, connections):
    """HTTP/2 cleartext with prior knowledge (h2c), 10 streams per connection."""
    out = subprocess.check_output(
        ["taskset", "-c", "1", "h2load", "-D", str(seconds), "-c", str(connections), "-m", "10",
         f"http://127.0.0.1:{port}{path}"], text=True)
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    return {"rps": rps, "total": int(m.group(3)), "failed": int(m.group(4))}


def measured(proc, fn):
    pids = pids_of(proc)
    before = cpu_ticks(pids)
    res = fn()
    res["cpu_us"] = (cpu_ticks(pids) - before) / CLK_TCK * 1e6 / max(res["total"], 1)
    return res


def ten_thousand_ingresses(d):
    """The bench manifests plus 10,000 host-specific Ingresses, in a second folder."""
    os.makedirs(f"{d}/manifests-10k", exist_ok=True)
    shutil.copy(f"{d}/manifests/bench.yaml", f"{d}/manifests-10k/bench.yaml")
    with open(f"{d}/manifests-10k/ingresses.yaml", "w") as f:
        for i in range(10_000):
            f.write(f"""---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: host-{i}, namespace: bench}}
spec:
  ingressClassName: erratum
  rules:
  - host: host-{i}.example
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: origin, port: {{number: 80}}}}}}}}
      - {{path: /api, pathType: Prefix, backend: {{service: {{name: origin, port: {{number: 80}}}}}}}}
""")


def rss_kib(pid):
    """Resident memory of a process in KiB (also used by cache_memory.py and ../soak.py)."""
    with open(f"/proc/{pid}/status") as f:
        return next((int(l.split()[1]) for l in f if l.startswith("VmRSS:")), 0)


def extra_scenarios(d, a, procs):
    """(5) HTTP/2 pass-through, (6) config churn, (7) 10,000 Ingresses. Fewer, shorter rounds."""
    rounds, seconds = (1, 1) if a.smoke else (3, 3)
    checks = a.checks
    print("\n(5) HTTP/2 (h2c, h2load -c 32 -m 10) pass-through /ok")
    print("| proxy | req/s | CPU µs/req | failed |")
    print("|---|---|---|---|")
    h2 = [("erratum", ERRATUM), ("nginx", NGINX_H2), ("haproxy", HAPROXY_H2)]
    res = {}
    for _ in range(rounds):
        for proxy, port in h2:
            res.setdefault(proxy, []).append(measured(procs[proxy], lambda: h2load(port, "/ok", seconds, a.connections)))
    for proxy, _ in h2:
        med = {k: statistics.median(r[k] for r in res[proxy]) for k in ["rps", "cpu_us", "failed"]}
        checks.append((f"h2c {proxy}: no failed requests", all(r["failed"] == 0 and r["total"] > 0 for r in res[proxy])))
        print(f"| {proxy} | {med['rps']:.0f} | {med['cpu_us']:.1f} | {med['failed']:.0f} |")

    print("\n(6) config churn: configuration rewritten 10 times a second during pass-through /ok")
    print("| proxy | req/s | non-2xx | socket errors | reloads |")
    print("|---|---|---|---|---|")
    manifest = f"{d}/manifests/bench.yaml"
    original = open(manifest).read()
    for proxy, port in [("erratum", ERRATUM), ("nginx", NGINX)]:
        rows = []
        for _ in range(rounds):
            stop = {"flag": False, "count": 0}
            def churn():
                while not stop["flag"]:
                    if proxy == "erratum":
                        # A new path on the Ingress each time: a real table rebuild, not a no-op.
                        n = stop["count"]
                        write(manifest, original.replace("- {path: /refused,", f"- {{path: /churn-{n}, pathType: Exact, backend: {{service: {{name: origin, port: {{number: 80}}}}}}}}\n      - {{path: /refused,"))
                    else:
                        os.kill(procs["nginx"].pid, signal.SIGHUP)
                    stop["count"] += 1
                    time.sleep(0.1)
            import threading
            t = threading.Thread(target=churn)
            t.start()
            r = wrk(port, "/ok", seconds, a.connections)
            stop["flag"] = True
            t.join()
            r["reloads"] = stop["count"]
            rows.append(r)
        write(manifest, original)
        if proxy == "erratum":
            checks.append(("churn erratum: no failed requests",
                           all(r["non2xx"] == 0 and not r["socket_errors"] for r in rows)))
        print(f"| {proxy} | {statistics.median(r['rps'] for r in rows):.0f} | {sum(r['non2xx'] for r in rows)} | "
              f"{'; '.join(r['socket_errors'] for r in rows if r['socket_errors']) or 0} | {sum(r['reloads'] for r in rows)} |")
    print("(HAProxy: reloading needs master-worker mode with socket handover; not measured.)")

    print("\n(7) 10,000 Ingresses (20,000 routes) vs the bench table: /ok for host-5000.example")
    ten_thousand_ingresses(d)
    big = subprocess.Popen(["taskset", "-c", "0", *erratum_run(a.erratum, f"{d}/manifests-10k", ERRATUM_10K, ADMIN_10K)])
    procs["erratum-10k"] = big
    wait_port(ERRATUM_10K)
    print("| table | req/s | CPU µs/req | RSS MiB |")
    print("|---|---|---|---|")
    rows = {}
    for _ in range(rounds):
        for name, proc, port, hdr in [("bench (3 routes)", procs["erratum"], ERRATUM, ()),
                                      ("10,000 Ingresses", big, ERRATUM_10K, ("Host: host-5000.example",))]:
            rows.setdefault(name, []).append(measured(proc, lambda: wrk(port, "/ok", seconds, a.connections, hdr)))
            rows[name][-1]["rss"] = rss_kib(proc.pid) / 1024
    for name, rs in rows.items():
        checks.append((f"{name}: all 200", all(r["non2xx"] == 0 and r["total"] > 0 for r in rs)))
        print(f"| {name} | {statistics.median(r['rps'] for r in rs):.0f} | {statistics.median(r['cpu_us'] for r in rs):.1f} | "
              f"{max(r['rss'] for r in rs):.1f} |")


def stop(procs):
    """SIGTERM to every process of `procs` (a dict), then waits; kills what is left after 10 s."""
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def report(checks):
    """Prints failed checks; the exit status for --smoke."""
    failed = [name for name, ok in checks if not ok]
    for name in failed:
        print(f"CHECK FAILED: {name}", file=sys.stderr)
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--erratum", default="target/dist/erratum")
    ap.add_argument("--only-extra", action="store_true", help="run scenarios 5-7 only")
    ap.add_argument("--smoke", action="store_true", help="CI: one short round, check statuses, no speed")
    ap.add_argument("--bare-peers", action="store_true",
                    help="nginx and HAProxy without the forwarded request fields erratum adds")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.seconds = 1, 1
    a.checks = []
    for tool in ["nginx", "haproxy", "wrk", "h2load", "taskset"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run benches/compare/setup.sh")
    d = tempfile.mkdtemp(prefix="erratum-bench-")
    os.chmod(d, 0o755)  # nginx workers run as nobody and need the cache and page folders
    configs(d, forwarded=not a.bare_peers)
    procs = {}
    try:
        procs["origin"] = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", f"{d}/origin.conf", "-p", d])
        procs["erratum"] = subprocess.Popen(["taskset", "-c", "0", *erratum_run(a.erratum, f"{d}/manifests")])
        procs["nginx"] = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", f"{d}/nginx.conf", "-p", d])
        procs["haproxy"] = subprocess.Popen(["taskset", "-c", "0", "haproxy", "-f", f"{d}/haproxy.cfg"])
        for port in [ORIGIN, ERRATUM, NGINX, HAPROXY]:
            wait_port(port)
        proxies = [("erratum", ERRATUM), ("nginx", NGINX), ("haproxy", HAPROXY)]
        results = {}
        if a.only_extra:
            extra_scenarios(d, a, procs)
            return report(a.checks)
        for name, path in SCENARIOS:
            for proxy, port in proxies:
                wrk(port, path, 1, a.connections)  # warm-up (fills caches and pools)
            for r in range(a.rounds):
                for proxy, port in proxies:
                    pids = pids_of(procs[proxy])
                    before = cpu_ticks(pids)
                    res = wrk(port, path, a.seconds, a.connections)
                    ticks = cpu_ticks(pids) - before
                    res["cpu_us"] = ticks / CLK_TCK * 1e6 / max(res["total"], 1)
                    results.setdefault((name, proxy), []).append(res)
        print(f"\nrounds={a.rounds} seconds={a.seconds} connections={a.connections} nproc={os.cpu_count()}\n")
        print("| scenario | proxy | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx | erratum/x req/s | erratum/x CPU |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, _ in SCENARIOS:
            med = {p: {k: statistics.median(r[k] for r in results[(name, p)]) for k in ["rps", "p50", "p99", "cpu_us", "non2xx"]}
                   for p, _ in proxies}
            for p, _ in proxies:
                m = med[p]
                ratio = "" if p == "erratum" or not m["rps"] else f"{med['erratum']['rps'] / m['rps']:.2f}"
                cpu_ratio = "" if p == "erratum" or not m["cpu_us"] else f"{med['erratum']['cpu_us'] / m['cpu_us']:.2f}"
                print(f"| {name} | {p} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu_us']:.1f} | {m['non2xx']:.0f} | {ratio} | {cpu_ratio} |")
        # Every proxy must answer each scenario as configured: the comparison is only fair if
        # all three do the same job.
        for name, path in SCENARIOS:
            for p, _ in proxies:
                rs = results[(name, p)]
                expect_errors = path != "/ok"
                ok = all(r["total"] > 0 and not r["socket_errors"]
                         and r["non2xx"] == (r["total"] if expect_errors else 0) for r in rs)
                a.checks.append((f"{name} {p}: {'every answer an error' if expect_errors else 'all 200'}", ok))
        extra_scenarios(d, a, procs)
        return report(a.checks)
    finally:
        stop(procs)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
