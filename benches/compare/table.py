#!/usr/bin/env python3
"""The whole table (issue 22): erratum beside nginx, HAProxy, Traefik and Pingora, every
scenario, on one machine, with each scenario's ratio to the best peer.

Every proxy gets run.py's configuration, changed by a `run.Variant` per group of scenarios:
- base: pass-through, an upstream 503 replaced by a page, a cached 404, a refused upstream's
  502 page, a plain->HTTPS redirect, h2c pass-through, and over TLS 1.3 (the one ECDSA P-256
  certificate for all): keep-alive, a full handshake per request, HTTP/2;
- an access log on (a file each); 1,000 regex routes (the request matches the last); two
  workers (the proxies on both cores, beside the load generator);
- upstreams (upstreams.py's hosts): one dead endpoint of three with retries, an HTTPS upstream
  verified against a CA, gRPC unary over h2c (tonic's health server), a stale hit (the copy of a
  good answer served while the origin answers 503).
Proxies run one worker pinned to core 0 (both cores for "two workers"); the origin (nginx) and
the load generator share core 1. Proxies alternate per round; medians are reported. CPU
µs/request is user+sys of every process of the proxy over the requests answered.

Where a peer cannot do a scenario, the row says so and why. Idle connections are c10k.py's.

Usage: benches/compare/table.py [--rounds N] [--seconds S] [--erratum PATH] [--traefik PATH]
       [--pingora PATH] [--grpc-origin PATH] [--only PROXY,...] [--scenarios PART,...] [--smoke]
--smoke (CI): one 1-second round of every scenario, then checks that every proxy answered as
configured (the status and page each scenario expects, no failed requests); asserts no speed.
"""
import argparse, http.client, os, re, shutil, ssl, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers, run, upstreams  # noqa: E402

PROXIES = ["erratum", "nginx", "haproxy", "traefik", "pingora"]
PLAIN = {"erratum": run.ERRATUM, "nginx": run.NGINX, "haproxy": run.HAPROXY,
         "traefik": peers.TRAEFIK, "pingora": peers.PINGORA}
# nginx and HAProxy take HTTP/2 with prior knowledge on a port of its own.
H2C = dict(PLAIN, nginx=run.NGINX_H2, haproxy=run.HAPROXY_H2)
# Traefik built from its module on the Go module proxy (peers.build_traefik), the first run builds it.
TRAEFIK_BUILT = ".ci/.tools/traefik-go/traefik"
TLS = {"erratum": 18071, "nginx": 18072, "haproxy": 18073, "traefik": 18078, "pingora": 18079}

NO_CACHE = "no error cache ({})"
# What a peer does differently in a scenario it can do, printed under the table.
DIFFERS = {
    ("upstream refused -> 502 page", "pingora"):
        "Pingora closes the client's connection after a failed upstream (its `fail_to_proxy` "
        "reuse flag is honoured only before a peer is chosen): every request opens a connection.",
    ("upstream refused -> 502 page", "haproxy"): "HAProxy answers 503 (its errorfile) for a refused server.",
    ("upstream 503 -> custom page", "traefik"):
        "Traefik's errors middleware fetches the page from a service (the origin) for each error.",
    ("one dead endpoint of three (retries)", "haproxy"):
        "HAProxy's active health checks (`check inter 2s`) take the dead server out after three "
        "failed checks; until then `retries 2` with `option redispatch 1` try another.",
    ("one dead endpoint of three (retries)", "traefik"):
        "Traefik's active health checks (every 2 s) take the dead server out; until then its retry "
        "middleware picks from the shared round robin again, so a request can meet the dead "
        "endpoint on every try (answered 502).",
    ("one dead endpoint of three (retries)", "pingora"):
        "Pingora (without pingora-load-balancing's health checks) tries the dead endpoint every "
        "third request and retries on the next.",
}
NO_STALE = "no stale-on-error ({})"
CANNOT = {
    "cached 404": {"haproxy": NO_CACHE.format("its cache stores 200s only"),
                   "traefik": NO_CACHE.format("none in Traefik OSS"),
                   "pingora": NO_CACHE.format("pingora-cache and a storage backend, not a minimal proxy")},
    "stale hit": {"haproxy": NO_STALE.format("its cache serves fresh 200s only"),
                  "traefik": NO_STALE.format("no cache in Traefik OSS"),
                  "pingora": NO_STALE.format("pingora-cache and a storage backend, not a minimal proxy")},
}


class Scenario:
    def __init__(self, name, variant, load, path, status, headers=(), page=False, prime=()):
        self.name, self.variant, self.load, self.path = name, variant, load, path
        # The statuses a proxy may answer (HAProxy says 503 for a refused server).
        self.status, self.headers, self.page = status, headers, page
        # Headers of one request sent before the first (the stale hit's good answer to keep).
        self.prime = prime


GRPC_HEADERS = (f":authority: {upstreams.HOSTS['grpc']}", "content-type: application/grpc", "te: trailers")
host = lambda name: f"Host: {upstreams.HOSTS[name]}"


SCENARIOS = [
    Scenario("pass-through 200 (1 KiB)", "base", "h1", "/ok", {200}),
    Scenario("upstream 503 -> custom page", "base", "h1", "/boom", {503}, page=True),
    Scenario("cached 404", "base", "h1", "/missing/page", {404}),
    Scenario("upstream refused -> 502 page", "base", "h1", "/refused/x", {502, 503}, page=True),
    Scenario("plain -> HTTPS redirect", "base", "h1", "/ok", {301, 308}, ("Host: secure.bench",)),
    Scenario("h2c pass-through", "base", "h2c", "/ok", {200}),
    Scenario("TLS 1.3 keep-alive", "base", "tls", "/ok", {200}),
    Scenario("TLS handshake per request", "base", "handshake", "/ok", {200}),
    Scenario("HTTP/2 over TLS", "base", "h2", "/ok", {200}),
    Scenario("access log on", "log", "h1", "/ok", {200}),
    Scenario("1,000 regex routes", "regex", "h1", "/r999/ok", {200}),
    Scenario("two workers", "workers2", "h1", "/ok", {200}),
    Scenario("one dead endpoint of three (retries)", "upstreams", "h1", "/ok", {200}, (host("dead"),)),
    Scenario("HTTPS upstream (verified)", "upstreams", "h1", "/ok", {200}, (host("https"),)),
    Scenario("gRPC unary (h2c)", "upstreams", "grpc", upstreams.GRPC_PATH, {200}, GRPC_HEADERS),
    # Each request makes the origin answer 503: only the copy kept from the first is a 200.
    Scenario("stale hit", "upstreams", "h1", "/flaky", {200}, (host("stale"), "X-Fail: 1"), prime=(host("stale"),)),
]


def variants(d, smoke):
    tls = (TLS, f"{d}/bench.crt", f"{d}/bench.key")
    return {
        "base": run.Variant(tls=tls),
        "log": run.Variant(access_log=True),
        "regex": run.Variant(regex_routes=1000),
        "workers2": run.Variant(workers=2),
        "upstreams": run.Variant(upstreams=True),
    }


def start(name, a, d, v):
    """Starts proxy `name` with Variant `v`; returns its process."""
    cores = "0-1" if v.workers > 1 else "0"
    out = None
    if name == "erratum":
        extra = ["--access-log", f"{d}/erratum-access.log"] if v.access_log else []
        cmd = run.erratum_run(a.erratum, f"{d}/manifests", extra=extra, workers=v.workers,
                              https=v.tls[0]["erratum"] if v.tls else None)
    elif name == "nginx":
        cmd = ["nginx", "-c", f"{d}/nginx.conf", "-p", d]
    elif name == "haproxy":
        cmd = ["haproxy", "-f", f"{d}/haproxy.cfg"]
        out = open(f"{d}/haproxy-access.log", "a") if v.access_log else None
    elif name == "traefik":
        cmd = peers.traefik_command(a.traefik, d, v)
    else:
        cmd = peers.pingora_command(a.pingora, d, v)
    return subprocess.Popen(["taskset", "-c", cores, *cmd], env=peers.env_for(name, v.workers), stdout=out)


def url(s, proxy):
    if s.load in ("tls", "handshake", "h2"):
        return f"https://127.0.0.1:{TLS[proxy]}{s.path}"
    return f"http://127.0.0.1:{(H2C if s.load in ('h2c', 'grpc') else PLAIN)[proxy]}{s.path}"


def h2load(target, seconds, connections, d, headers=(), data=None):
    """h2load with 10 streams per connection (h2c by prior knowledge, or TLS with ALPN h2);
    latency percentiles from its per-request log. `data`: a file each request sends (a POST)."""
    log = f"{d}/h2load.log"
    extra = [a for h in headers for a in ("-H", h)] + (["-d", data] if data else [])
    out = subprocess.check_output(["taskset", "-c", "1", "h2load", "-D", str(seconds), "-c", str(connections),
                                   "-m", "10", f"--log-file={log}", *extra, target], text=True)
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, \d+ errored", out)
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    # Each line: start time (µs), status, time to the response (µs).
    durations = sorted(int(l.split("\t")[2]) for l in open(log) if l.count("\t") >= 2)
    pct = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))] / 1000 if durations else 0.0
    return {"rps": rps, "total": int(m.group(2)), "p50": pct(0.50), "p99": pct(0.99),
            # As wrk counts: answers neither 2xx nor 3xx.
            "non2xx": int(status.group(3)) + int(status.group(4)),
            "socket_errors": "" if int(m.group(4)) == 0 else f"{m.group(4)} failed"}


def load(s, proxy, seconds, connections, d):
    target = url(s, proxy)
    if s.load in ("h2c", "h2", "grpc"):
        data = upstreams.grpc_request(d) if s.load == "grpc" else None
        return h2load(target, seconds, connections, d, s.headers, data)
    headers = list(s.headers) + (["Connection: close"] if s.load == "handshake" else [])
    extra = [x for h in headers for x in ("-H", h)]
    out = subprocess.check_output(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                                   "--latency", *extra, target], text=True)
    return run.parse_wrk(out)


def probe(s, proxy, headers=None):
    """One request as the scenario sends it (or with `headers`): (status, whether the body is
    the custom page)."""
    host, port = "127.0.0.1", int(url(s, proxy).split(":")[2].split("/")[0])
    if s.load == "grpc":
        return (200 if upstreams.grpc_status(port) else "no grpc-status 0 in the answer"), False
    if s.load == "h2c":
        # HTTP/2 by prior knowledge: h2load's one request, its status class.
        out = subprocess.run(["h2load", "-n1", "-c1", url(s, proxy)], capture_output=True, text=True).stdout
        m = re.search(r"status codes: (\d+) 2xx", out)
        return (200 if m and m.group(1) == "1" else f"h2load: {out[-200:]!r}"), False
    if s.load in ("tls", "handshake", "h2"):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=5, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", s.path, headers=dict(h.split(": ", 1) for h in (s.headers if headers is None else headers)))
        r = conn.getresponse()
        # The TLS rows compare TLS 1.3 (nginx 1.22 offers only 1.2 unless told).
        version = conn.sock.version() if isinstance(conn, http.client.HTTPSConnection) else None
        if version not in (None, "TLSv1.3"):
            return f"negotiated {version}, not TLSv1.3", False
        return r.status, run.PAGE.strip() in r.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}", False
    finally:
        conn.close()


def best(values, key, lowest=False):
    vals = [v[key] for v in values if v and v[key]]
    return (min if lowest else max)(vals) if vals else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--erratum", default="target/dist/erratum")
    ap.add_argument("--traefik", default=TRAEFIK_BUILT, help="default: built from the Go module proxy on first use")
    ap.add_argument("--pingora", default="benches/compare/pingora/target/release/pingora-bench")
    ap.add_argument("--grpc-origin", default="target/release/examples/grpc_origin")
    ap.add_argument("--only", default="", help="comma-separated proxies to run (default: all)")
    ap.add_argument("--scenarios", default="", help="comma-separated parts of scenario names to run (default: all)")
    ap.add_argument("--smoke", action="store_true", help="CI: one short round, check answers, no speed")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.seconds = 1, 1
    proxies = [p for p in PROXIES if not a.only or p in a.only.split(",")]
    if "traefik" in proxies and not os.path.exists(a.traefik) and a.traefik == TRAEFIK_BUILT:
        print(f"building Traefik from the Go module proxy ({peers.TRAEFIK_MODULE}; ~10 minutes)", file=sys.stderr)
        peers.build_traefik(os.path.dirname(TRAEFIK_BUILT))
    chosen = lambda s: not a.scenarios or any(part in s.name for part in a.scenarios.split(","))
    for tool in ["nginx", "haproxy", "wrk", "h2load", "taskset", "openssl"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run benches/compare/setup.sh")
    d = tempfile.mkdtemp(prefix="erratum-table-")
    os.chmod(d, 0o755)
    run.certificate(d)
    vs = variants(d, a.smoke)
    checks, results = [], {}
    origins = {}
    try:
        # The origin with every listener any variant needs (the upstream hosts' too).
        run.configs(d, variant=vs["upstreams"])
        origins["origin"] = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", f"{d}/origin.conf", "-p", d])
        if any(s.variant == "upstreams" and chosen(s) for s in SCENARIOS):
            origins["grpc"] = subprocess.Popen(["taskset", "-c", "1", a.grpc_origin, f"127.0.0.1:{upstreams.GRPC}"])
        run.wait_port(run.ORIGIN)
        for key, v in vs.items():
            scenarios = [s for s in SCENARIOS if s.variant == key and chosen(s)]
            if not scenarios:
                continue
            run.configs(d, variant=v)
            procs = {}
            try:
                for p in proxies:
                    procs[p] = start(p, a, d, v)
                for p in proxies:
                    run.wait_port(PLAIN[p])
                time.sleep(0.5)  # Traefik loads its file provider after it listens
                if key == "upstreams":
                    # Steady state: HAProxy's and Traefik's first health checks have run.
                    time.sleep(2.5)
                for s in scenarios:
                    can = [p for p in proxies if p not in CANNOT.get(s.name, {})]
                    if s.prime:
                        for p in can:
                            probe(s, p, s.prime)
                        time.sleep(1.2)  # past the copy's freshness (nginx keeps it 1 s): every request asks
                    for p in can:
                        status, page = probe(s, p)
                        ok = status in s.status and (page or not s.page)
                        checks.append((f"{s.name} {p}: answers {sorted(s.status)}{' with the page' if s.page else ''} "
                                       f"(got {status}{', no page' if s.page and not page else ''})", ok))
                        load(s, p, 1, a.connections, d)  # warm-up: pools, caches, JITs
                    for _ in range(a.rounds):
                        for p in can:
                            results.setdefault((s.name, p), []).append(
                                run.measured(procs[p], lambda: load(s, p, a.seconds, a.connections, d)))
                    for p in can:
                        rs = results[(s.name, p)]
                        errors_expected = min(s.status) >= 400
                        closes = (s.name, p) in DIFFERS and "closes" in DIFFERS[(s.name, p)]
                        ok = all(r["total"] > 0 and (closes or not r["socket_errors"])
                                 and r["non2xx"] == (r["total"] if errors_expected else 0) for r in rs)
                        checks.append((f"{s.name} {p}: every answer {'an error' if errors_expected else '2xx/3xx'}, "
                                       f"no socket errors ({[(r['total'], r['non2xx'], r['socket_errors']) for r in rs]})", ok))
            finally:
                run.stop(procs)
    finally:
        run.stop(origins)
        shutil.rmtree(d, ignore_errors=True)

    print(f"\nrounds={a.rounds} seconds={a.seconds} connections={a.connections} nproc={os.cpu_count()}\n")
    print("| scenario | proxy | req/s | p50 ms | p99 ms | CPU µs/req | erratum/best peer req/s | erratum/best peer CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for s in filter(chosen, SCENARIOS):
        med = {}
        for p in proxies:
            rs = results.get((s.name, p))
            med[p] = {k: statistics.median(r[k] for r in rs) for k in ["rps", "p50", "p99", "cpu_us"]} if rs else None
        peer_vals = [med[p] for p in proxies if p != "erratum"]
        best_rps, best_cpu = best(peer_vals, "rps"), best(peer_vals, "cpu_us", lowest=True)
        for p in proxies:
            m = med[p]
            if m is None:
                print(f"| {s.name} | {p} | cannot: {CANNOT.get(s.name, {}).get(p, 'not run')} | | | | | |")
                continue
            ratios = ("", "")
            if p == "erratum" and best_rps:
                ratios = (f"{m['rps'] / best_rps:.2f}", f"{m['cpu_us'] / best_cpu:.2f}")
            print(f"| {s.name} | {p} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {m['cpu_us']:.1f} | "
                  f"{ratios[0]} | {ratios[1]} |")
    print()
    for (name, p), why in DIFFERS.items():
        print(f"- {name}, {p}: {why}")
    return run.report(checks)


if __name__ == "__main__":
    sys.exit(main())
