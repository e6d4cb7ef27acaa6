#!/usr/bin/env python3
"""User-space instructions per request, counted by valgrind's callgrind: a measure that does not
move with the machine's noise, for A/B comparisons of one change (run.py's CPU time moves by
several percent between runs on a shared machine; this moves by well under 0.1 %).

Each proxy (erratum, and with --peers nginx and HAProxy too) runs under callgrind once: N1
requests of one path warm it up (h2load --h1, 32 connections), `callgrind_control --zero` clears
the counters, N2 requests are measured and `callgrind_control --dump` writes their count; that
divided by N2 is the cost of a request without start-up and shutdown. (--two-runs: the method
before session 12, two processes serving N1 and N2 and the difference of their totals; start-up
whose length varies, like a clock's calibration, shows there as noise of up to ±500 per
request.) Kernel time (system calls) is not counted: compare it with run.py's CPU time or
`strace -c`.

Usage: benches/compare/instructions.py [--erratum PATH] [--path /ok] [--n1 2000] [--n2 20000] [--workers N] [--peers] [--two-runs]
       [--erratum-arg=--FLAG=VALUE ...] [--header 'Name: value' ...] [--data FILE (POST it)] [--prime]
       [--handshakes] [--grpc-origin PATH]
Needs valgrind (Debian package) besides what setup.sh installs. Loopback only; stops what it starts.
"""
import argparse, glob, http.client, os, shutil, signal, ssl, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the same configs, ports and origin as the comparison)


def totals(pattern):
    total = 0
    for f in glob.glob(pattern):
        with open(f) as fh:
            for line in fh:
                if line.startswith("summary:") or line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
    return total


def counted(cmd, port, path, n, out, headers=(), data=None):
    """Instructions of `cmd` (under callgrind) serving `n` requests of `path` on `port`."""
    for f in glob.glob(f"{out}.*"):
        os.remove(f)
    proc = subprocess.Popen(["taskset", "-c", "0", "valgrind", "--tool=callgrind", "--trace-children=yes",
                             f"--callgrind-out-file={out}.%p"] + cmd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        run.wait_port(port, path, timeout=60)
        extra = [a for h in headers for a in ("-H", h)] + (["-d", data] if data else [])
        subprocess.run(["taskset", "-c", "1", "h2load", "--h1", "-n", str(n), "-c", "32", *extra,
                        f"http://127.0.0.1:{port}{path}"], check=True, capture_output=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(0.5)
    return totals(f"{out}.*")


def prime(port, path, headers):
    """One GET of `path` with only the request's host (from ':authority: NAME'): what a stale
    hit needs first, a good answer kept while the origin is well."""
    host = next((h.split(":", 2)[2].strip() for h in headers if h.startswith(":authority:")), None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host} if host else {})
    urllib.request.urlopen(req, timeout=30).read()


def handshakes(port, path, count):
    """`count` requests over HTTPS, each on a new connection (a full TLS 1.3 handshake with
    OpenSSL's client defaults, as wrk's in table.py's handshake row), one at a time."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    for _ in range(count):
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=ctx)
        conn.request("GET", path, headers={"Connection": "close"})
        conn.getresponse().read()
        assert conn.sock is None or conn.sock.version() == "TLSv1.3"
        conn.close()


def counted_steady(cmd, port, path, warmup, n, out, headers=(), data=None, primed=False, tls_port=None,
                   h2c=False):
    """Instructions of `cmd` (under callgrind) serving `n` requests of `path` on `port` after
    `warmup` requests, in one process: the counters are zeroed after the warm-up and dumped
    after the measured requests, so start-up (whose length varies: a clock calibrates itself
    for a variable time) and shutdown are not counted. With `tls_port`, each request is a new
    HTTPS connection there; with `h2c`, HTTP/2 by prior knowledge (10 streams per connection)."""
    for f in glob.glob(f"{out}.*"):
        os.remove(f)
    proc = subprocess.Popen(["taskset", "-c", "0", "valgrind", "--tool=callgrind", "--trace-children=yes",
                             f"--callgrind-out-file={out}.%p"] + cmd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    extra = [a for h in headers for a in ("-H", h)] + (["-d", data] if data else [])
    protocol = ["-m", "10"] if h2c else ["--h1"]
    load = lambda count: subprocess.run(["taskset", "-c", "1", "h2load", *protocol, "-n", str(count), "-c", "32",
                                         *extra, f"http://127.0.0.1:{port}{path}"], check=True, capture_output=True)
    if tls_port:
        load = lambda count: handshakes(tls_port, path, count)
    try:
        run.wait_port(port, path, timeout=60)
        if primed:
            prime(port, path, headers)
        load(warmup)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        load(n)
        subprocess.run(["callgrind_control", "--dump=measured", str(proc.pid)], check=True, capture_output=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(0.5)
    # The dump after the measured requests is the process's first numbered part.
    return totals(f"{out}.{proc.pid}.1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--erratum", default="target/dist/erratum")
    ap.add_argument("--path", default="/ok")
    ap.add_argument("--n1", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=1, help="erratum's --workers (callgrind runs its threads one at a time)")
    ap.add_argument("--n2", type=int, default=20000)
    ap.add_argument("--peers", action="store_true", help="count nginx and HAProxy too")
    ap.add_argument("--erratum-arg", action="append", default=[],
                    help="an extra flag for erratum run (repeat), e.g. --erratum-arg=--trusted-proxies=127.0.0.1")
    ap.add_argument("--header", action="append", default=[],
                    help="a request header h2load sends (repeat); the host as ':authority: NAME' (a Host header would be a second one)")
    ap.add_argument("--data", help="a file h2load POSTs as each request's body (the hyper path)")
    ap.add_argument("--prime", action="store_true",
                    help="one GET with only the host before the warm-up (a stale hit: /flaky on stale.bench, "
                         "with --header 'X-Fail: 1' for the measured requests)")
    ap.add_argument("--two-runs", action="store_true",
                    help="the method before session 12: (n2 run - n1 run) / (n2 - n1), two processes; "
                         "start-up that varies between them shows as noise (up to ±500 here)")
    ap.add_argument("--handshakes", action="store_true",
                    help="each request a new HTTPS connection (a full TLS 1.3 handshake; erratum only; "
                         "--n1/--n2 are handshakes, e.g. --n1 50 --n2 300)")
    ap.add_argument("--grpc-origin", metavar="PATH",
                    help="a gRPC unary call over h2c to tonic's health server at PATH (table.py's gRPC row; "
                         "erratum only; cargo build --release --example grpc_origin)")
    a = ap.parse_args()
    for tool in ["valgrind", "nginx", "h2load", "taskset"] + (["haproxy"] if a.peers else []):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (valgrind: apt-get install valgrind; the rest: setup.sh)")
    d = tempfile.mkdtemp(prefix="erratum-instr-")
    os.chmod(d, 0o755)
    variant, tls_port = None, None
    if a.handshakes:
        tls_port = run.ERRATUM + 1000
        crt, key = run.certificate(d)
        variant = run.Variant(tls=({"erratum": tls_port, "nginx": tls_port + 1, "haproxy": tls_port + 2}, crt, key))
    grpc = None
    if a.grpc_origin:
        import upstreams
        variant = run.Variant(upstreams=True)
        a.path, a.data = upstreams.GRPC_PATH, upstreams.grpc_request(d)
        a.header = [f":authority: {upstreams.HOSTS['grpc']}", "content-type: application/grpc", "te: trailers"]
    run.configs(d, variant=variant)
    origin = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", f"{d}/origin.conf", "-p", d])
    if a.grpc_origin:
        grpc = subprocess.Popen(["taskset", "-c", "1", a.grpc_origin, f"127.0.0.1:{upstreams.GRPC}"])
    try:
        run.wait_port(run.ORIGIN)
        proxies = [("erratum", run.ERRATUM,
                    run.erratum_run(os.path.abspath(a.erratum), f"{d}/manifests", extra=a.erratum_arg,
                                   workers=a.workers, https=tls_port))]
        if a.peers:
            # One process each: nginx without its master, HAProxy in the foreground.
            proxies.append(("nginx", run.NGINX, ["nginx", "-c", f"{d}/nginx.conf", "-p", d,
                                                 "-g", "master_process off;"]))
            proxies.append(("haproxy", run.HAPROXY, ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"]))
        if a.two_runs:
            print(f"path {a.path}: user-space instructions per request (callgrind, {a.n2} - {a.n1} requests)")
        else:
            print(f"path {a.path}: user-space instructions per request (callgrind, {a.n2} requests after "
                  f"{a.n1} of warm-up)")
        for name, port, cmd in proxies:
            if a.two_runs:
                small = counted(cmd, port, a.path, a.n1, f"{d}/cg-{name}", a.header, a.data)
                large = counted(cmd, port, a.path, a.n2, f"{d}/cg-{name}", a.header, a.data)
                print(f"{name:8s} {(large - small) / (a.n2 - a.n1):9.0f}")
            else:
                measured = counted_steady(cmd, port, a.path, a.n1, a.n2, f"{d}/cg-{name}", a.header, a.data,
                                          a.prime, tls_port if name == "erratum" else None,
                                          h2c=bool(a.grpc_origin))
                print(f"{name:8s} {measured / a.n2:9.0f}")
    finally:
        if grpc:
            grpc.terminate()
            grpc.wait(timeout=10)
        origin.send_signal(signal.SIGTERM)
        origin.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
