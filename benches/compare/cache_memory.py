#!/usr/bin/env python3
"""Error-cache memory and the cost of the cache on success traffic.

1. RSS of erratum after N distinct cached 404 URLs (default 1,000,000), against the
   --error-cache-max-bytes bound: the cache must stay within the bound plus a fixed overhead.
2. Pass-through req/s and CPU per request with the error cache on and off (coalescing only
   touches keys that were errors recently, so success traffic should not pay).

Needs nginx, wrk and taskset (benches/compare/setup.sh). Loopback only; stops what it starts.
Usage: benches/compare/cache_memory.py [--urls N] [--max-bytes B] [--erratum PATH]
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import run as harness  # noqa: E402  (same origin config and helpers)

PORT, ADMIN = 18181, 18191


def start_erratum(binary, d, max_bytes):
    return subprocess.Popen(["taskset", "-c", "0", binary, "--log-level", "error", "run", "--manifests", f"{d}/manifests",
                             "--workers", "1", "--http-addr", f"127.0.0.1:{PORT}", "--https-addr", "off",
                             "--admin-addr", f"127.0.0.1:{ADMIN}", "--error-cache-max-bytes", str(max_bytes)])


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", type=int, default=1_000_000)
    ap.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--erratum", default="target/release/erratum")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="erratum-cachemem-")
    os.chmod(d, 0o755)
    harness.configs(d)
    # Keep every 404 for an hour so nothing expires during the run.
    path = f"{d}/manifests/bench.yaml"
    text = open(path).read().replace("errorCachingMinTTLSeconds: 10", "errorCachingMinTTLSeconds: 3600")
    open(path, "w").write(text)
    lua = f"{d}/unique.lua"
    open(lua, "w").write(f"""
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/missing/" .. counter)
end
""")
    origin = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", f"{d}/origin.conf", "-p", d])
    try:
        harness.wait_port(harness.ORIGIN)
        # 1. Memory.
        e = start_erratum(a.erratum, d, a.max_bytes)
        harness.wait_port(PORT)
        harness.wrk(PORT, "/missing/warm", 1, 32)
        before = harness.rss_kib(e.pid)
        started = time.time()
        sent = 0
        # Each request asks for a new URL; keep going until enough distinct URLs were sent.
        while sent < a.urls:
            seconds = max(2, int((a.urls - sent) / 40000) + 2)
            out = subprocess.check_output(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s", "-s", lua,
                                           f"http://127.0.0.1:{PORT}/"], text=True)
            sent += int(harness.re.search(r"(\d+) requests in", out).group(1))
            lua_text = open(lua).read()
            open(lua, "w").write(lua_text.replace("counter = 0", f"counter = {sent}", 1) if "counter = 0" in lua_text
                                 else harness.re.sub(r"counter = \d+", f"counter = {sent}", lua_text, count=1))
        elapsed = time.time() - started
        time.sleep(1)
        stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/cache"))
        after = harness.rss_kib(e.pid)
        stop(e)
        print(f"distinct 404 URLs: {sent} in {elapsed:.1f} s")
        print(f"cache: entries {stats['entries']}, bytes {stats['bytes']} of {stats['max_bytes']} bound")
        print(f"RSS: {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after; growth {(after - before) / 1024:.1f} MiB "
              f"= bound {a.max_bytes / 1048576:.0f} MiB + {((after - before) * 1024 - a.max_bytes) / 1048576:.1f} MiB overhead")
        # 2. Pass-through with the cache on and off, alternating.
        results = {"on": [], "off": []}
        for _ in range(3):
            for mode, max_bytes in [("on", a.max_bytes), ("off", 0)]:
                e = start_erratum(a.erratum, d, max_bytes)
                harness.wait_port(PORT)
                harness.wrk(PORT, "/ok", 1, 32)
                pids = {e.pid}
                t0 = harness.cpu_ticks(pids)
                r = harness.wrk(PORT, "/ok", a.seconds, 32)
                r["cpu_us"] = (harness.cpu_ticks(pids) - t0) / harness.CLK_TCK * 1e6 / max(r["total"], 1)
                results[mode].append(r)
                stop(e)
        for mode in ["on", "off"]:
            rps = sorted(r["rps"] for r in results[mode])[1]
            cpu = sorted(r["cpu_us"] for r in results[mode])[1]
            print(f"pass-through /ok, error cache {mode}: {rps:.0f} req/s, {cpu:.1f} CPU µs/req (median of 3)")
    finally:
        stop(origin)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
