#!/usr/bin/env bash
# Installs what the side-by-side benchmark needs (Debian packages) and builds erratum.
set -euo pipefail
apt-get update -qq
apt-get install -y -qq nginx haproxy wrk nghttp2-client util-linux procps
cargo build --profile dist --locked  # what ships: fat LTO (Cargo.toml)
