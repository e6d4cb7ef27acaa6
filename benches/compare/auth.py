#!/usr/bin/env python3
"""Authentication side by side: erratum's `auth-url` vs nginx's `auth_request` as ingress-nginx
renders it, and erratum's `auth-type: basic` vs nginx's `auth_basic`, on one origin that is
also the authentication service (`/auth` answers 200).

nginx runs twice for forward auth: as ingress-nginx configures it by default (the auth
subrequest's `proxy_pass` to the URL: a new connection per request) and with
`auth-keepalive` (an upstream block with keepalive). HAProxy has no forward authentication
without Lua or SPOE and is left out. One worker each pinned to core 0; the origin and wrk on
core 1; variants alternate for --rounds rounds and the median is reported, with the proxy's
CPU time per request (user+sys from /proc).

Usage: benches/compare/auth.py [--erratum target/dist/erratum] [--rounds 3] [--seconds 3]
       [--connections 32] [--smoke]
Loopback only; stops what it starts. --smoke: one short round, checks every variant answered
200 to every request (the harness works; never a speed).
"""
import argparse, os, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the same configs, ports and origin as the comparison)


def nginx_conf(d):
    """ingress-nginx's rendering of auth-url (its template's external-auth location) and of
    auth-type basic, for the same origin as erratum's bench manifests."""
    o = run.ORIGIN
    auth_location = f"""
    location = /_external-auth {{
      internal;
      proxy_pass_request_body off; proxy_set_header Content-Length ""; proxy_set_header X-Forwarded-Proto "";
      proxy_set_header X-Request-ID $request_id; proxy_set_header Host 127.0.0.1:{o};
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri; proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Sent-From "nginx-ingress-controller"; proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Auth-Request-Redirect $request_uri;
      proxy_http_version 1.1; %s
    }}"""
    run.write(f"{d}/htpasswd", f"bench:{run.BENCH_APR1}\n")
    os.chmod(d, 0o755)  # nginx's worker (nobody) reads the htpasswd file
    run.write(f"{d}/nginx-auth.conf", f"""
worker_processes 1; daemon off; pid {d}/nginx-auth.pid; error_log {d}/nginx-auth.err crit;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream origin {{ server 127.0.0.1:{o}; keepalive 64; }}
  upstream auth_keepalive {{ server 127.0.0.1:{o}; keepalive 64; }}
  proxy_http_version 1.1; proxy_set_header Connection "";{run.NGINX_FORWARDED}
  server {{ listen 127.0.0.1:{run.NGINX}; server_name auth.bench;{auth_location % f"proxy_pass http://127.0.0.1:{o}/auth;"}
    location / {{ auth_request /_external-auth; proxy_pass http://origin; }}
  }}
  server {{ listen 127.0.0.1:{run.NGINX}; server_name auth-keepalive.bench;{auth_location % 'proxy_set_header Connection ""; proxy_pass http://auth_keepalive/auth;'}
    location / {{ auth_request /_external-auth; proxy_pass http://origin; }}
  }}
  server {{ listen 127.0.0.1:{run.NGINX}; server_name plain.bench; location / {{ proxy_pass http://origin; }} }}
  server {{ listen 127.0.0.1:{run.NGINX}; server_name basic.bench;
    location / {{ auth_basic "bench"; auth_basic_user_file {d}/htpasswd; proxy_pass http://origin; }}
  }}
}}
""")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--erratum", default="target/dist/erratum")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.seconds = 1, 1
    d = tempfile.mkdtemp(prefix="erratum-auth-")
    run.configs(d)
    nginx_conf(d)
    basic = (run.BENCH_BASIC,)
    # (name, which proxy, Host, extra headers)
    variants = [
        ("erratum auth-url", "erratum", "auth.bench", ()),
        ("nginx auth_request (ingress-nginx default)", "nginx", "auth.bench", ()),
        ("nginx auth_request + auth-keepalive", "nginx", "auth-keepalive.bench", ()),
        ("erratum no auth (plain.bench)", "erratum", "plain.bench", ()),
        ("nginx no auth (plain.bench)", "nginx", "plain.bench", ()),
        ("erratum auth-type basic", "erratum", "basic.bench", basic),
        ("nginx auth_basic", "nginx", "basic.bench", basic),
    ]
    commands = {
        "erratum": ["taskset", "-c", "0", *run.erratum_run(a.erratum, f"{d}/manifests", admin=0)],
        "nginx": ["taskset", "-c", "0", "nginx", "-c", f"{d}/nginx-auth.conf"],
    }
    ports = {"erratum": run.ERRATUM, "nginx": run.NGINX}
    origin = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", f"{d}/origin.conf"], start_new_session=True)
    results = {name: [] for name, *_ in variants}
    try:
        run.wait_port(run.ORIGIN, "/ok")
        for _ in range(a.rounds):
            for name, proxy, host, extra in variants:
                proc = subprocess.Popen(commands[proxy], stdout=subprocess.DEVNULL, start_new_session=True)
                try:
                    run.wait_port(ports[proxy], "/ok")
                    headers = (f"Host: {host}", *extra)
                    run.wrk(ports[proxy], "/ok", 1, a.connections, headers)  # warm-up
                    res = run.measured(proc, lambda: run.wrk(ports[proxy], "/ok", a.seconds, a.connections, headers))
                    results[name].append(res)
                finally:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=30)
                time.sleep(0.5)
    finally:
        os.killpg(origin.pid, signal.SIGTERM)
    print(f"GET /ok (1 KiB) through authentication: median of {a.rounds} rounds of {a.seconds} s, wrk -c{a.connections}")
    print(f"{'variant':<44} {'req/s':>9} {'CPU us/req':>11} {'p99 ms':>8} {'failed':>8}")
    failed = []
    for name, rows in results.items():
        med = lambda k: statistics.median(r[k] for r in rows)
        bad = sum(r["non2xx"] for r in rows) + sum(1 for r in rows if r["socket_errors"])
        print(f"{name:<44} {med('rps'):>9.0f} {med('cpu_us'):>11.2f} {med('p99'):>8.2f} {bad:>8}")
        if bad or med("total") == 0:
            failed.append(name)
    if a.smoke and failed:
        raise SystemExit(f"smoke: {failed} did not answer 200 to every request")


if __name__ == "__main__":
    main()
