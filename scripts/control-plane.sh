#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver) for erratum's tests, built from the Go
# module proxy only: nothing else serves Kubernetes binaries to this project's machines.
#
#   scripts/control-plane.sh build        build (or find cached) kube-apiserver, kubectl, etcd and etcdctl;
#                                         prints the folder that holds them
#   scripts/control-plane.sh up DIR       certificates, etcd and kube-apiserver on 127.0.0.1 (free ports),
#                                         RBAC on, admin kubeconfig at DIR/kubeconfig; returns once /readyz answers
#   scripts/control-plane.sh down DIR     stop what `up DIR` started (by recorded pids, never by name)
#   scripts/control-plane.sh add-apiserver DIR      a 2nd kube-apiserver on the same etcd (DIR/kubeconfig-2)
#   scripts/control-plane.sh stop-apiserver DIR [N] / start-apiserver DIR [N]
#                                         stop or start kube-apiserver N (default 1) on its port (fault tests)
#   scripts/control-plane.sh compact DIR  compact etcd at its current revision (watch-resume tests)
#
# Versions and the cache (outside the checkout; a second `build` takes seconds):
#   ERRATUM_K8S_VERSION   (default 1.37.2)     k8s.io/kubernetes as served by the Go module proxy
#   ERRATUM_ETCD_VERSION  (default v3.6.16)    go.etcd.io/etcd/server/v3 (>= 3.5.13: watch progress)
#   ERRATUM_CONTROL_PLANE_CACHE (default ~/.cache/erratum/control-plane)
set -euo pipefail

K8S_VERSION="${ERRATUM_K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ERRATUM_ETCD_VERSION:-v3.6.16}"
CACHE="${ERRATUM_CONTROL_PLANE_CACHE:-$HOME/.cache/erratum/control-plane}"
BIN="$CACHE/k8s-v$K8S_VERSION-etcd-$ETCD_VERSION"

die() { echo "control-plane: $*" >&2; exit 1; }

need_go() {
  command -v go >/dev/null 2>&1 \
    || die "Go is not installed; install Go >= 1.26 (https://go.dev/doc/install or your distribution's golang package) — the Kubernetes tests build kube-apiserver and etcd from the Go module proxy"
  local v; v="$(go env GOVERSION 2>/dev/null || true)"; v="${v#go}"
  local major="${v%%.*}" rest="${v#*.}"; local minor="${rest%%.*}"
  { [ "${major:-0}" -gt 1 ] || { [ "${major:-0}" -eq 1 ] && [ "${minor:-0}" -ge 26 ]; }; } \
    || die "Go ${v:-?} is too old; install Go >= 1.26 (k8s.io/kubernetes v$K8S_VERSION declares go 1.26)"
}

# A fresh, empty wrapper module in $1 (the programs are added to it with `go get -tool`).
wrapper_module() {
  local dir="$1"
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init example.invalid/erratum-control-plane >/dev/null 2>&1 && go mod edit -go=1.26.0)
}

# kube-apiserver and kubectl (the same version: kubectl's supported skew is one minor).
build_kubernetes() {
  local mod="$CACHE/build/kas-$K8S_VERSION"
  wrapper_module "$mod"
  cd "$mod"
  # k8s.io/kubernetes requires its 30-odd staging modules (k8s.io/api, k8s.io/apiserver, ...) at
  # v0.0.0 with `replace => ./staging/src/...`; a dependency's replaces are ignored, so the wrapper
  # replaces each with its published v0.<minor>.<patch> tag before anything is resolved.
  go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" > dl.json \
    || die "the Go module proxy ($(go env GOPROXY)) did not serve k8s.io/kubernetes@v$K8S_VERSION"
  local gomod; gomod="$(sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p' dl.json)"
  [ -f "$gomod" ] || die "no go.mod for k8s.io/kubernetes@v$K8S_VERSION in the module cache"
  local staging
  staging="$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod")"
  [ -n "$staging" ] || die "no staging replaces found in $gomod"
  local m
  for m in $staging; do go mod edit -replace="$m=$m@v0.${K8S_VERSION#1.}"; done
  # Non-staging replaces of k8s.io/kubernetes are not inherited either: copy them.
  grep -E '^[[:space:]]*[^/[:space:]]+\.[^[:space:]]+ .*=>' "$gomod" | grep -v '\./staging/' \
    | sed -n 's#^[[:space:]]*\([^[:space:]]*\)\( v[^[:space:]]*\)\{0,1\}[[:space:]]*=>[[:space:]]*\([^[:space:]]*\)[[:space:]]\{1,\}\(v[^[:space:]]*\).*#\1 \3@\4#p' \
    | while read -r old new; do go mod edit -replace="$old=$new"; done
  go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION"
  local minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
  local ldf="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  local c
  for c in kube-apiserver kubectl; do
    go build -trimpath -ldflags "$ldf" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$BIN/$c.tmp" "$BIN/$c"
  done
  cp go.mod "$BIN/kube-apiserver.go.mod"
}

build_etcd() {
  local mod="$CACHE/build/etcd-$ETCD_VERSION"
  wrapper_module "$mod"
  cd "$mod"
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION" \
    || die "the Go module proxy ($(go env GOPROXY)) did not serve go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  local ldf="-s -w"
  go build -trimpath -ldflags "$ldf" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  go build -trimpath -ldflags "$ldf" -o "$BIN/etcdctl.tmp" go.etcd.io/etcd/etcdctl/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"; mv "$BIN/etcdctl.tmp" "$BIN/etcdctl"
  cp go.mod "$BIN/etcd.go.mod"
}

built() { [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubectl" ] && [ -x "$BIN/etcd" ] && [ -x "$BIN/etcdctl" ]; }

cmd_build() {
  if built; then
    echo "$BIN"; return 0
  fi
  need_go
  # Tests start control planes in parallel: one build at a time, the others wait for it.
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build.lock"
  flock 9
  if built; then
    echo "$BIN"; return 0
  fi
  export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
  # Only the module proxy is reachable: never fall back to cloning from VCS hosts.
  case "$(go env GOPROXY)" in
    off|direct) die "GOPROXY is '$(go env GOPROXY)'; the Kubernetes tests need the Go module proxy (unset GOPROXY or set it to https://proxy.golang.org)";;
  esac
  export GOPROXY="${GOPROXY:-$(go env GOPROXY | sed 's/,direct$//; s/|direct$//')}"
  mkdir -p "$BIN"
  local t0=$SECONDS
  { [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubectl" ] || (build_kubernetes); } >&2 || die "building kube-apiserver v$K8S_VERSION failed (output above)"
  { [ -x "$BIN/etcd" ] && [ -x "$BIN/etcdctl" ] || (build_etcd); } >&2 || die "building etcd $ETCD_VERSION failed (output above)"
  echo "control-plane: built in $((SECONDS - t0)) s" >&2
  echo "$BIN"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Instance N of kube-apiserver (1 is the one `up` starts; `add-apiserver` starts a 2nd on the same
# etcd, as in an HA control plane) keeps its pid, port and log under DIR with suffix "" or "-N".
sfx() { [ "${1:-1}" = 1 ] && echo "" || echo "-$1"; }

# Starts kube-apiserver instance N with the flags recorded by `up` (also used by start-apiserver).
start_apiserver() {
  local dir="$1" n="${2:-1}" s; s="$(sfx "$n")"
  # shellcheck disable=SC2046
  setsid "$(cat "$dir/bin")/kube-apiserver" $(sed "s/@PORT@/$(cat "$dir/port$s")/" "$dir/kube-apiserver.args") \
    </dev/null >>"$dir/kube-apiserver$s.log" 2>&1 &
  echo $! > "$dir/kube-apiserver$s.pid"
}

wait_ready() {
  local dir="$1" n="${2:-1}" s port token i; s="$(sfx "$n")"
  port="$(cat "$dir/port$s")"; token="$(cat "$dir/admin.token")"
  for i in $(seq 1 600); do
    if curl -fs --max-time 2 --cacert "$dir/pki/ca.crt" -H "Authorization: Bearer $token" \
         "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$(cat "$dir/kube-apiserver$s.pid")" 2>/dev/null \
      || die "kube-apiserver exited; last lines of $dir/kube-apiserver$s.log:
$(tail -n 15 "$dir/kube-apiserver$s.log")"
    sleep 0.1
  done
  die "kube-apiserver not ready after 60 s; see $dir/kube-apiserver$s.log"
}

write_kubeconfig() {
  local dir="$1" file="$2" port="$3"
  cat > "$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: erratum-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $dir/pki/ca.crt
users:
- name: admin
  user:
    token: $(cat "$dir/admin.token")
contexts:
- name: erratum-test
  context: {cluster: erratum-test, user: admin}
current-context: erratum-test
KC
}

cmd_up() {
  local dir="${1:?usage: control-plane.sh up DIR}"
  command -v openssl >/dev/null || die "openssl is not installed (apt-get install openssl): it makes the control plane's certificates"
  command -v curl >/dev/null || die "curl is not installed (apt-get install curl)"
  local bin; bin="$(cmd_build)"
  mkdir -p "$dir/pki" "$dir/etcd"
  dir="$(cd "$dir" && pwd)"
  echo "$bin" > "$dir/bin"
  local etcd_port peer_port port
  etcd_port="$(free_port)"; peer_port="$(free_port)"; port="$(free_port)"
  echo "$port" > "$dir/port"; echo "$etcd_port" > "$dir/etcd.port"

  # PKI: one CA; a serving certificate for 127.0.0.1; an admin client certificate (system:masters);
  # the service-account signing key (TokenRequest: `kubectl create token` works).
  (
    cd "$dir/pki"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 365 -subj "/CN=erratum-test-ca" 2>/dev/null
    openssl req "${ec[@]}" -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
      'extendedKeyUsage=serverAuth' \
      'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc' > server.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile server.ext -out apiserver.crt 2>/dev/null
    openssl req "${ec[@]}" -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=erratum-test-admin" 2>/dev/null
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth' > client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile client.ext -out admin.crt 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
  ) || die "openssl could not make the certificates"
  local token; token="$(openssl rand -hex 24)"
  echo "$token" > "$dir/admin.token"
  echo "$token,erratum-test-admin,erratum-test-admin,system:masters" > "$dir/tokens.csv"

  setsid "$bin/etcd" --name=erratum-test --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="erratum-test=http://127.0.0.1:$peer_port" --listen-metrics-urls="" \
    --unsafe-no-fsync --log-level=warn --quota-backend-bytes=4294967296 \
    </dev/null >"$dir/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"

  # An audit log of every request made as erratum's ServiceAccount: tests read it to fail on any
  # call the chart's RBAC does not allow (a 403), and to see what erratum asked for.
  cat > "$dir/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts:erratum-system"]
- level: None
POLICY
  cat > "$dir/kube-apiserver.args" <<ARGS
--etcd-servers=http://127.0.0.1:$etcd_port
--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=@PORT@
--tls-cert-file=$dir/pki/apiserver.crt --tls-private-key-file=$dir/pki/apiserver.key --cert-dir=$dir/pki
--client-ca-file=$dir/pki/ca.crt --token-auth-file=$dir/tokens.csv
--service-account-issuer=https://kubernetes.default.svc --api-audiences=https://kubernetes.default.svc
--service-account-key-file=$dir/pki/sa.pub --service-account-signing-key-file=$dir/pki/sa.key
--service-cluster-ip-range=10.0.0.0/16 --authorization-mode=RBAC
--disable-admission-plugins=ServiceAccount --endpoint-reconciler-type=none --profiling=false
--allow-privileged=true
--audit-policy-file=$dir/audit-policy.yaml --audit-log-path=$dir/audit.log --audit-log-mode=blocking
ARGS
  start_apiserver "$dir"

  write_kubeconfig "$dir" "$dir/kubeconfig" "$port"

  # The owner (a test binary) may die without calling `down`: a watchdog stops the control plane
  # once that process is gone, so no run leaves kube-apiserver and etcd behind.
  if [ -n "${ERRATUM_CONTROL_PLANE_OWNER:-}" ]; then
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2" down "$3"' \
      watchdog "$ERRATUM_CONTROL_PLANE_OWNER" "$(cd "$(dirname "$0")" && pwd)/$(basename "$0")" "$dir" \
      </dev/null >/dev/null 2>&1 &
  fi
  wait_ready "$dir"
  echo "export KUBECONFIG=$dir/kubeconfig"
}

stop_pid() {
  local file="$1" pid i
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if kill -TERM "$pid" 2>/dev/null; then
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

cmd_down() {
  local dir="${1:?usage: control-plane.sh down DIR}" f
  for f in "$dir"/kube-apiserver*.pid; do stop_pid "$f"; done
  stop_pid "$dir/etcd.pid"
}

# Instance N of kube-apiserver, stopped and started separately (fault tests).
cmd_stop_apiserver() {
  local dir="${1:?usage: control-plane.sh stop-apiserver DIR [N]}" pid
  local file="$dir/kube-apiserver$(sfx "${2:-1}").pid"
  # Killed, not shut down: no graceful drain of its watches, as when a control-plane node dies.
  pid="$(cat "$file")"; kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$file"
}

cmd_start_apiserver() {
  local dir="${1:?usage: control-plane.sh start-apiserver DIR [N]}"
  start_apiserver "$dir" "${2:-1}"
  wait_ready "$dir" "${2:-1}"
}

# A second kube-apiserver on the same etcd, with its admin kubeconfig at DIR/kubeconfig-2.
cmd_add_apiserver() {
  local dir="${1:?usage: control-plane.sh add-apiserver DIR}"
  free_port > "$dir/port-2"
  write_kubeconfig "$dir" "$dir/kubeconfig-2" "$(cat "$dir/port-2")"
  cmd_start_apiserver "$dir" 2
}

cmd_compact() {
  local dir="${1:?usage: control-plane.sh compact DIR}" ep rev
  ep="http://127.0.0.1:$(cat "$dir/etcd.port")"
  rev="$("$(cat "$dir/bin")/etcdctl" --endpoints="$ep" endpoint status -w json | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')"
  [ -n "$rev" ] || die "could not read etcd's revision"
  "$(cat "$dir/bin")/etcdctl" --endpoints="$ep" compaction --physical "$rev" >/dev/null
  echo "$rev"
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up "${2:-}" ;;
  down) cmd_down "${2:-}" ;;
  stop-apiserver) cmd_stop_apiserver "${2:-}" "${3:-1}" ;;
  start-apiserver) cmd_start_apiserver "${2:-}" "${3:-1}" ;;
  add-apiserver) cmd_add_apiserver "${2:-}" ;;
  compact) cmd_compact "${2:-}" ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
