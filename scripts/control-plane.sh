#!/usr/bin/env bash
# Throw-away Kubernetes control plane (etcd + kube-apiserver, 1.20 or newer) for tests.
#
#   scripts/control-plane.sh start  DIR   # start, wait for /readyz, write kubeconfigs
#   scripts/control-plane.sh stop   DIR   # stop what `start DIR` started (idempotent)
#   scripts/control-plane.sh status DIR   # exit 0 iff both processes run and /readyz is ok
#
# `start` leaves in DIR:
#   kubeconfig            admin (user "hss-admin", group system:masters)
#   kubeconfig-operator   restricted user system:serviceaccount:hss-system:hss-operator
#                         (groups system:serviceaccounts, system:serviceaccounts:hss-system,
#                         system:authenticated): has no permissions until RBAC grants them
#   env                   KUBECONFIG, KUBECONFIG_OPERATOR, KUBE_SERVER, ADMIN_TOKEN,
#                         OPERATOR_TOKEN, ETCD_ENDPOINT (shell syntax)
#   pids                  etcd and kube-apiserver pids, one per line
#   etcd.log, kube-apiserver.log, pki/ (ca.crt, apiserver.crt, sa.key, ...), tokens.csv
# and prints the `env` lines on stdout (all other output goes to stderr).
# The etcd data in DIR is wiped on every start, so each start is a fresh cluster.
#
# Binaries come from scripts/kube-apiserver.sh (honours KUBE_APISERVER_BIN,
# ETCD_BIN, KUBEBUILDER_ASSETS, HSS_CACHE_DIR). HSS_CP_TIMEOUT (default 60)
# bounds the wait for readiness, in seconds.
set -euo pipefail

exec 3>&1 1>&2

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
TIMEOUT=${HSS_CP_TIMEOUT:-60}
SERVICE_CIDR=10.0.0.0/24
SA_ISSUER=https://kubernetes.default.svc.cluster.local
OPERATOR_USER=system:serviceaccount:hss-system:hss-operator
OPERATOR_GROUPS=system:serviceaccounts,system:serviceaccounts:hss-system

log() { printf '[control-plane.sh] %s\n' "$*" >&2; }
die() { printf '[control-plane.sh] ERROR: %s\n' "$*" >&2; exit 1; }
usage() { printf 'usage: %s start|stop|status DIR\n' "$0" >&2; exit 2; }

[ $# -eq 2 ] || usage
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd -P)

ensure_tools() {
  local missing=() t pkg
  for t in openssl:openssl curl:curl setsid:util-linux base64:coreutils; do
    command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  log "installing ${missing[*]}"
  for pkg in "${missing[@]}"; do
    apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1 || { $sudo apt-get -o DPkg::Lock::Timeout=600 update -q; break; }
  done
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >&2
}

# Pids from DIR/pids that are alive and really ours (their command line mentions DIR).
our_pids() {
  [ -f "$DIR/pids" ] || return 0
  local pid
  while read -r pid; do
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    [ -r "/proc/$pid/cmdline" ] || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/" && echo "$pid"
  done <"$DIR/pids"
  return 0
}

stop_pid() { # PID : SIGTERM, wait up to 15 s, then SIGKILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "process $pid ignored SIGTERM for 15s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  die "could not stop process $pid"
}

do_stop() {
  local pids=() p
  # One at a time, kube-apiserver first: if etcd goes first, the apiserver's
  # shutdown blocks on RemoveEndpoints() until it times out.
  while read -r p; do [ -n "$p" ] && pids=("$p" "${pids[@]}"); done < <(our_pids)
  if [ "${#pids[@]}" -gt 0 ]; then
    log "stopping ${pids[*]}"
    for p in "${pids[@]}"; do stop_pid "$p"; done
  fi
  rm -f "$DIR/pids"
  # The logs and kubeconfigs stay for a post-mortem; etcd's data (a 64 MiB preallocated WAL at
  # least) does not: a test run leaves dozens of these directories behind.
  rm -rf "$DIR/etcd-data"
}

# Ports that have any TCP socket on this host (any state, v4 and v6).
used_ports() {
  local f
  for f in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$f" ] || continue
    tail -n +2 "$f" | while read -r _ addr _; do echo $((16#${addr##*:})); done
  done
}

pick_ports() { # N -> N distinct free ports, space-separated
  local used chosen=" " p n=0
  used=" $(used_ports | sort -un | tr '\n' ' ') "
  while [ "$n" -lt "$1" ]; do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    case "$used$chosen" in *" $p "*) continue ;; esac
    chosen="$chosen$p "
    n=$((n + 1))
  done
  printf '%s\n' "$chosen"
}

gen_pki() {
  local pki=$DIR/pki
  rm -rf "$pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  cat >"$pki/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = hss-test
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  (
    cd "$pki"
    openssl req -x509 -new -config openssl.cnf -extensions v3_ca -newkey rsa:2048 -nodes \
      -keyout ca.key -out ca.crt -days 3650 -subj "/CN=hss-test-ca" 2>/dev/null
    openssl req -new -config openssl.cnf -newkey rsa:2048 -nodes \
      -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
      -days 3650 -extfile openssl.cnf -extensions v3_server -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f apiserver.csr
  ) || die "certificate generation with openssl failed"
}

write_kubeconfig() { # FILE SERVER USER TOKEN
  local ca
  ca=$(base64 -w0 "$DIR/pki/ca.crt")
  (
    umask 077
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hss-test
  cluster:
    server: $2
    certificate-authority-data: $ca
users:
- name: $3
  user:
    token: $4
contexts:
- name: hss-test
  context:
    cluster: hss-test
    user: $3
    namespace: default
current-context: hss-test
preferences: {}
EOF
  )
}

fail_start() { # MSG LOG... (component logs to show, most relevant first)
  log "ERROR: $1"
  shift
  local f
  for f in "$@"; do
    [ -f "$DIR/$f.log" ] || continue
    log "---- last 30 lines of $DIR/$f.log ----"
    tail -n 30 "$DIR/$f.log" >&2 || true
  done
  return 1
}

# One attempt. Returns 0 on success, 75 when a port was taken (retry), 1 otherwise.
start_once() {
  local ports etcd_client etcd_peer api_port admin_token op_token server
  ports=$(pick_ports 3)
  read -r etcd_client etcd_peer api_port <<<"$ports"
  server=https://127.0.0.1:$api_port
  admin_token=$(openssl rand -hex 32)
  op_token=$(openssl rand -hex 32)

  rm -rf "$DIR/etcd-data"
  rm -f "$DIR/pids" "$DIR/etcd.log" "$DIR/kube-apiserver.log" "$DIR/kubeconfig" "$DIR/kubeconfig-operator" "$DIR/env"
  gen_pki
  (
    umask 077
    {
      printf '%s,hss-admin,hss-admin,"system:masters"\n' "$admin_token"
      printf '%s,%s,hss-operator,"%s"\n' "$op_token" "$OPERATOR_USER" "$OPERATOR_GROUPS"
    } >"$DIR/tokens.csv"
  )

  log "starting etcd on 127.0.0.1:$etcd_client"
  setsid "$ETCD" \
    --name=hss-test \
    --data-dir="$DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$etcd_client" \
    --advertise-client-urls="http://127.0.0.1:$etcd_client" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="hss-test=http://127.0.0.1:$etcd_peer" \
    --initial-cluster-state=new \
    --logger=zap --log-outputs=stderr \
    </dev/null >"$DIR/etcd.log" 2>&1 3>&- &
  local etcd_pid=$!
  echo "$etcd_pid" >"$DIR/pids"

  local deadline=$((SECONDS + TIMEOUT))
  until curl -fsS --max-time 2 "http://127.0.0.1:$etcd_client/health" 2>/dev/null | grep -q '"health":"true"'; do
    if ! kill -0 "$etcd_pid" 2>/dev/null; then
      grep -q 'address already in use' "$DIR/etcd.log" && return 75
      fail_start "etcd exited during startup" etcd; return 1
    fi
    [ "$SECONDS" -lt "$deadline" ] || { fail_start "etcd not healthy after ${TIMEOUT}s" etcd; return 1; }
    sleep 0.2
  done

  # Flags by server version: 1.20 needs --insecure-port=0 (later ones refuse the flag); newer
  # servers with an etcd 3.4 (Debian bookworm's), which lacks watch progress requests, need
  # WatchList off; with etcd 3.5 or newer they keep it (streaming lists).
  local version_flags=()
  case "$("$KUBE_APISERVER" --version 2>/dev/null)" in
    *"v1.20."* | *"v1.19."*) version_flags+=(--insecure-port=0) ;;
    *)
      case "$("$ETCD" --version 2>/dev/null | sed -n 1p)" in
        *"Version: 3.4."* | *"Version: 3.3."*) version_flags+=(--feature-gates=WatchList=false) ;;
      esac
      ;;
  esac
  log "starting kube-apiserver on $server ($("$KUBE_APISERVER" --version 2>/dev/null))"
  setsid "$KUBE_APISERVER" \
    --advertise-address=127.0.0.1 \
    --bind-address=127.0.0.1 \
    --secure-port="$api_port" \
    "${version_flags[@]}" \
    --etcd-servers="http://127.0.0.1:$etcd_client" \
    --cert-dir="$DIR/pki" \
    --tls-cert-file="$DIR/pki/apiserver.crt" \
    --tls-private-key-file="$DIR/pki/apiserver.key" \
    --client-ca-file="$DIR/pki/ca.crt" \
    --token-auth-file="$DIR/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer="$SA_ISSUER" \
    --service-account-key-file="$DIR/pki/sa.pub" \
    --service-account-signing-key-file="$DIR/pki/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --disable-admission-plugins=ServiceAccount \
    --allow-privileged=true \
    --profiling=false \
    </dev/null >"$DIR/kube-apiserver.log" 2>&1 3>&- &
  local api_pid=$!
  echo "$api_pid" >>"$DIR/pids"

  # /readyz covers etcd, RBAC bootstrap roles, CRD informers, ...; the default
  # namespace is created by a controller shortly after, so wait for it too.
  local curl_api=(curl -fsS --max-time 2 --cacert "$DIR/pki/ca.crt" -H "Authorization: Bearer $admin_token")
  until [ "$("${curl_api[@]}" "$server/readyz" 2>/dev/null || true)" = ok ] &&
        "${curl_api[@]}" -o /dev/null "$server/api/v1/namespaces/default" 2>/dev/null; do
    if ! kill -0 "$api_pid" 2>/dev/null; then
      grep -q 'address already in use' "$DIR/kube-apiserver.log" && return 75
      fail_start "kube-apiserver exited during startup" kube-apiserver; return 1
    fi
    kill -0 "$etcd_pid" 2>/dev/null || { fail_start "etcd died while kube-apiserver was starting" etcd kube-apiserver; return 1; }
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "last /readyz?verbose answer:"
      curl -sS --max-time 2 --cacert "$DIR/pki/ca.crt" -H "Authorization: Bearer $admin_token" \
        "$server/readyz?verbose" | grep -v '^\[+\]' >&2 || true
      fail_start "kube-apiserver not ready after ${TIMEOUT}s" kube-apiserver; return 1
    fi
    sleep 0.25
  done

  write_kubeconfig "$DIR/kubeconfig" "$server" hss-admin "$admin_token"
  write_kubeconfig "$DIR/kubeconfig-operator" "$server" hss-operator "$op_token"
  (
    umask 077
    cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
KUBECONFIG_OPERATOR=$DIR/kubeconfig-operator
KUBE_SERVER=$server
ADMIN_TOKEN=$admin_token
OPERATOR_TOKEN=$op_token
ETCD_ENDPOINT=http://127.0.0.1:$etcd_client
EOF
  )
  return 0
}

do_start() {
  [ -z "$(our_pids)" ] || die "a control plane is already running in $DIR (pids: $(our_pids | tr '\n' ' ')); run '$0 stop $DIR' first"
  ensure_tools
  local bins
  bins=$("$SCRIPT_DIR/kube-apiserver.sh") || die "scripts/kube-apiserver.sh failed"
  KUBE_APISERVER=$(printf '%s\n' "$bins" | sed -n 's/^KUBE_APISERVER_BIN=//p' | tail -n1)
  ETCD=$(printf '%s\n' "$bins" | sed -n 's/^ETCD_BIN=//p' | tail -n1)
  if [ ! -x "$KUBE_APISERVER" ] || [ ! -x "$ETCD" ]; then
    die "kube-apiserver.sh gave unusable paths: $bins"
  fi

  # Never leave half a control plane behind on failure or interruption.
  trap 'do_stop' EXIT
  trap 'exit 130' INT TERM HUP
  local attempt rc t0=$SECONDS
  for attempt in 1 2 3; do
    rc=0
    start_once || rc=$?
    [ "$rc" = 0 ] && break
    do_stop
    [ "$rc" = 75 ] || exit 1
    log "port collision (attempt $attempt); retrying with other ports"
  done
  [ "$rc" = 0 ] || die "could not find free ports after 3 attempts"
  trap - EXIT INT TERM HUP
  log "control plane ready in $((SECONDS - t0))s; kubeconfig: $DIR/kubeconfig"
  cat "$DIR/env" >&3
}

do_status() {
  local n
  n=$(our_pids | wc -l)
  [ "$n" -eq 2 ] || { log "not running in $DIR"; return 1; }
  local ADMIN_TOKEN KUBE_SERVER
  ADMIN_TOKEN=$(sed -n 's/^ADMIN_TOKEN=//p' "$DIR/env")
  KUBE_SERVER=$(sed -n 's/^KUBE_SERVER=//p' "$DIR/env")
  [ "$(curl -fsS --max-time 2 --cacert "$DIR/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "$KUBE_SERVER/readyz" 2>/dev/null)" = ok ] ||
    { log "running but $KUBE_SERVER/readyz is not ok"; return 1; }
  cat "$DIR/env" >&3
}

case "$CMD" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) usage ;;
esac
