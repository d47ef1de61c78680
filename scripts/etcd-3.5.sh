#!/usr/bin/env bash
# Fetch an etcd 3.5 (Debian trixie's etcd-server 3.5.16) for the current-Kubernetes run in CI.
#
# Why: a kube-apiserver 1.32+ streams its first lists (WatchList) only over an etcd that answers
# watch progress requests; Debian bookworm's etcd 3.4 does not, so control-plane.sh turns
# WatchList off with it, and the operator's streaming path would go untested.
#
# Prints ETCD_BIN=/abs/path on stdout and exits 0, or prints nothing and exits 1 (no network,
# the package moved, a checksum mismatch): callers then keep the etcd they have. The .deb is
# pinned by sha256 and cached in $HSS_CACHE_DIR (default ~/.cache/hss-operator).
set -euo pipefail
exec 3>&1 1>&2

VERSION=3.5.16-4
SHA256=0875921bb0d023f2af9b8e15cdfbe417a03e65731345fb832c40f9c2dd72967b
MIRROR=${HSS_DEBIAN_MIRROR:-https://deb.debian.org/debian}
DIR=${HSS_CACHE_DIR:-${HOME:-/root}/.cache/hss-operator}/etcd-$VERSION
BIN=$DIR/etcd

log() { printf '[etcd-3.5.sh] %s\n' "$*" >&2; }

if [ ! -x "$BIN" ]; then
  mkdir -p "$DIR"
  deb=$DIR/etcd-server.deb
  url=$MIRROR/pool/main/e/etcd/etcd-server_${VERSION}_amd64.deb
  log "fetching $url"
  if ! curl -fsSL --retry 3 --max-time 300 -o "$deb.tmp" "$url"; then
    log "could not fetch etcd-server $VERSION"; rm -f "$deb.tmp"; exit 1
  fi
  if [ "$(sha256sum "$deb.tmp" | cut -d' ' -f1)" != "$SHA256" ]; then
    log "etcd-server $VERSION: checksum mismatch"; rm -f "$deb.tmp"; exit 1
  fi
  rm -rf "$DIR/x" && mkdir -p "$DIR/x"
  dpkg-deb -x "$deb.tmp" "$DIR/x"
  install -m 0755 "$DIR/x/usr/bin/etcd" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  rm -rf "$DIR/x" "$deb.tmp"
fi
"$BIN" --version | sed -n 1p
printf 'ETCD_BIN=%s\n' "$BIN" >&3
