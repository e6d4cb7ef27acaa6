#!/usr/bin/env python3
"""Many clients at once (C10k), side by side: --idle keep-alive connections that each sent one
request and then sit idle, while --busy connections run wrk; every proxy alone in turn, one
worker on core 0, the origin (nginx), the clients and wrk on core 1.

For each proxy, started fresh:
  1. opens the idle clients all at once (asyncio), each sending `GET /ok` (1 KiB) and reading
     its answer: how long the slowest took (the client's own pace included), how many failed,
     and how many connections the kernel turned away meanwhile because the proxy's accept
     queue was full (ListenOverflows + ListenDrops: each costs its client a SYN retransmit,
     >= 1 s; loopback, so only the proxy under test counts);
  2. the proxy's RSS (every process of it) before and after: bytes per idle connection;
  3. wrk with --busy connections on /ok for --seconds while the idle ones sit: req/s, p99,
     requests over 2 s (wrk's latency distribution), errors;
  4. every idle client sends a second request on its connection: how many still answer 200.
Every proxy keeps idle connections for 60 s (erratum `--client-header-timeout 60s`, nginx's
default 75 s, HAProxy `timeout client 60s`), longer than the run.

Usage: benches/compare/c10k.py [--erratum PATH] [--idle 10000] [--busy 200] [--seconds 10]
       [--traefik PATH] [--pingora PATH] [--smoke]
--smoke (CI): 1,000 idle clients and a 1-second busy phase; checks that every proxy answered
every request and kept every idle connection (exits 1 if not); never a speed or a size.
Loopback only; stops what it starts. Needs `ulimit -n` above twice --idle.
"""
import argparse, asyncio, os, re, resource, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (ports, configs, wrk, RSS)
import peers  # noqa: E402  (Traefik and Pingora)

REQUEST = b"GET /ok HTTP/1.1\r\nHost: c10k.bench\r\n\r\n"


async def exchange(reader, writer):
    """One request on an open connection; its status, after reading the whole answer."""
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if length is None:
        raise ValueError("no content-length")
    await reader.readexactly(int(length.group(1)))
    return status


async def open_idle(port, n):
    """n connections at once, one request each; (connections, failures, slowest seconds, the
    client's own pace included)."""
    async def one():
        start = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            status = await asyncio.wait_for(exchange(reader, writer), 30)
            return (reader, writer) if status == 200 else None, time.monotonic() - start
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            return None, time.monotonic() - start
    results = await asyncio.gather(*(one() for _ in range(n)))
    conns = [c for c, _ in results if c]
    return conns, n - len(conns), max(t for _, t in results)


async def second_request(conns):
    """A second request on every idle connection: how many answered 200."""
    async def one(c):
        try:
            return await asyncio.wait_for(exchange(*c), 30) == 200
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            return False
        finally:
            c[1].close()
    return sum(await asyncio.gather(*(one(c) for c in conns)))


def listen_drops():
    """The kernel's count of connections a full accept queue turned away (TcpExt
    ListenOverflows and ListenDrops): each costs its client a SYN retransmit, >= 1 s."""
    with open("/proc/net/netstat") as f:
        lines = [l.split() for l in f if l.startswith("TcpExt:")]
    fields = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return fields.get("ListenOverflows", 0) + fields.get("ListenDrops", 0)


def rss_total(proc):
    return sum(run.rss_kib(p) for p in run.pids_of(proc) if os.path.exists(f"/proc/{p}"))


def wrk_slow(port, seconds, connections):
    """wrk with its latency distribution: req/s, p99 ms, requests over 2 s, errors."""
    out = subprocess.check_output(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "--latency", "-H", "Host: c10k.bench", f"http://127.0.0.1:{port}/ok"], text=True)
    r = run.parse_wrk(out)
    # wrk's "Latency Distribution" stops at 99 %; its max is the one figure over that.
    m = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    r["max_ms"] = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    return r


def measure(name, proc, port, a):
    loop = asyncio.new_event_loop()
    try:
        time.sleep(0.5)
        run.wait_port(port, "/ok")
        before = rss_total(proc)
        drops = listen_drops()
        conns, failed, slowest = loop.run_until_complete(open_idle(port, a.idle))
        drops = listen_drops() - drops
        time.sleep(1)
        after = rss_total(proc)
        busy = wrk_slow(port, a.seconds, a.busy)
        after_busy = rss_total(proc)
        alive = loop.run_until_complete(second_request(conns))
    finally:
        loop.close()
    per_conn = (after - before) * 1024 / max(len(conns), 1)
    row = {"proxy": name, "opened": len(conns), "failed": failed, "slowest_s": slowest, "drops": drops,
           "rss_before_mib": before / 1024, "rss_idle_mib": after / 1024, "rss_busy_mib": after_busy / 1024,
           "bytes_per_idle": per_conn, "alive": alive, **busy}
    a.checks.append((f"{name}: every idle client answered", failed == 0))
    a.checks.append((f"{name}: every idle connection kept", alive == len(conns)))
    a.checks.append((f"{name}: busy phase all 200, no socket errors",
                     busy["total"] > 0 and busy["non2xx"] == 0 and not busy["socket_errors"]))
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--erratum", default="target/dist/erratum")
    ap.add_argument("--traefik", help="a traefik binary (benches/compare/peers.py fetches one)")
    ap.add_argument("--pingora", help="the Pingora peer binary (benches/compare/pingora)")
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--busy", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--only", help="comma-separated proxies to run")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.idle, a.seconds = 1000, 1
    a.checks = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * a.idle + 1000
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        if min(want, hard) < want:
            raise SystemExit(f"ulimit -n is {hard}: {a.idle} idle clients need {want}")
    d = tempfile.mkdtemp(prefix="erratum-c10k-")
    os.chmod(d, 0o755)
    run.configs(d)
    big = f"worker_rlimit_nofile {want}; events {{ worker_connections {want}; }}"
    for conf in ["nginx.conf", "origin.conf"]:
        text = open(f"{d}/{conf}").read().replace("events { worker_connections 4096; }", big)
        run.write(f"{d}/{conf}", text.replace("keepalive_requests 1000000;", "keepalive_requests 1000000; keepalive_timeout 75s;"))
    hap = open(f"{d}/haproxy.cfg").read().replace("maxconn 4096", f"maxconn {a.idle + a.busy + 100}")
    run.write(f"{d}/haproxy.cfg", hap)
    proxies = {
        "erratum": (lambda: run.erratum_run(a.erratum, f"{d}/manifests", extra=["--client-header-timeout", "60s"]),
                    run.ERRATUM),
        "nginx": (lambda: ["nginx", "-c", f"{d}/nginx.conf", "-p", d], run.NGINX),
        "haproxy": (lambda: ["haproxy", "-f", f"{d}/haproxy.cfg"], run.HAPROXY),
    }
    if a.traefik:
        proxies["traefik"] = (lambda: peers.traefik_command(a.traefik, d), peers.TRAEFIK)
    if a.pingora:
        proxies["pingora"] = (lambda: peers.pingora_command(a.pingora, d), peers.PINGORA)
    if a.only:
        proxies = {k: v for k, v in proxies.items() if k in a.only.split(",")}
    origin = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", f"{d}/origin.conf", "-p", d])
    rows = []
    try:
        run.wait_port(run.ORIGIN)
        for name, (command, port) in proxies.items():
            proc = subprocess.Popen(["taskset", "-c", "0", *command()], env=peers.env_for(name))
            try:
                rows.append(measure(name, proc, port, a))
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    finally:
        origin.send_signal(signal.SIGTERM)
        origin.wait(timeout=10)
    print(f"\nidle={a.idle} busy={a.busy} seconds={a.seconds} nproc={os.cpu_count()}\n")
    print("| proxy | idle opened | failed | slowest open s | accept queue drops | RSS before MiB | RSS idle MiB "
          "| bytes / idle conn | busy req/s | busy p99 ms | busy max ms | busy errors | idle kept |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        errors = r["non2xx"] + (1 if r["socket_errors"] else 0)
        print(f"| {r['proxy']} | {r['opened']} | {r['failed']} | {r['slowest_s']:.2f} | {r['drops']} "
              f"| {r['rss_before_mib']:.1f} | {r['rss_idle_mib']:.1f} | {r['bytes_per_idle']:.0f} "
              f"| {r['rps']:.0f} | {r['p99']:.2f} | {r['max_ms']:.0f} | {errors} {r['socket_errors']} "
              f"| {r['alive']}/{r['opened']} |")
    return run.report(a.checks)


if __name__ == "__main__":
    sys.exit(main())
