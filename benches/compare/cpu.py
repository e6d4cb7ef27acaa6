#!/usr/bin/env python3
"""CPU per request of one erratum binary under wrk, with different flags: the A/B companion of
instructions.py for request-path features (what callgrind does not see: system calls, the
access log's writer thread's writes). One worker pinned to core 0, wrk and the origin on core 1;
the variants run alternately for --rounds rounds and the median is reported.

Usage: benches/compare/cpu.py [--erratum PATH] [--path /ok] [--rounds 5] [--seconds 5]
       --variant 'NAME' [--variant 'NAME: --flag=value --other=value' ...] [--header 'Name: value']
Loopback only; stops what it starts.
"""
import argparse, os, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the same configs, ports and origin as the comparison)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--erratum", default="target/dist/erratum")
    ap.add_argument("--path", default="/ok")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--variant", action="append", required=True, help="'NAME: --flags ...'")
    ap.add_argument("--header", action="append", default=[])
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="erratum-cpu-")
    run.configs(d)
    origin = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", f"{d}/origin.conf"], start_new_session=True)
    variants = []
    for v in a.variant:
        name, _, flags = v.partition(":")
        variants.append((name.strip(), [f.replace("{dir}", d) for f in flags.split()]))
    results = {name: [] for name, _ in variants}
    try:
        run.wait_port(run.ORIGIN, "/ok")
        for _ in range(a.rounds):
            for name, flags in variants:
                proc = subprocess.Popen(
                    ["taskset", "-c", "0", *run.erratum_run(a.erratum, f"{d}/manifests", admin=0, extra=flags)],
                    stdout=subprocess.DEVNULL, start_new_session=True)
                try:
                    run.wait_port(run.ERRATUM, a.path)
                    run.wrk(run.ERRATUM, a.path, 1, a.connections, a.header)  # warm-up
                    res = run.measured(proc, lambda: run.wrk(run.ERRATUM, a.path, a.seconds, a.connections, a.header))
                    results[name].append(res)
                finally:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                time.sleep(0.3)
    finally:
        os.killpg(origin.pid, signal.SIGTERM)
    print(f"path {a.path}: median of {a.rounds} rounds of {a.seconds} s, wrk -c{a.connections}")
    print(f"{'variant':<28} {'req/s':>9} {'CPU us/req':>11} {'p99 ms':>8}")
    for name, rows in results.items():
        med = lambda k: statistics.median(r[k] for r in rows)
        print(f"{name:<28} {med('rps'):>9.0f} {med('cpu_us'):>11.2f} {med('p99'):>8.2f}")


if __name__ == "__main__":
    main()
