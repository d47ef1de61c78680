#!/usr/bin/env bash
# Ensures Prometheus and promtool for the alert and dashboard tests (scripts/deploy/test_monitoring.py).
#
# Resolution order: PROMETHEUS_BIN / PROMTOOL_BIN (must be executable if set), then the binaries
# on PATH, then Debian's `prometheus` package (apt-get, which provides both).
#
# The last two lines on stdout are always
#   PROMETHEUS_BIN=/abs/path
#   PROMTOOL_BIN=/abs/path
# Everything else goes to stderr. Idempotent.
set -euo pipefail
exec 3>&1 1>&2

log() { printf '[prometheus.sh] %s\n' "$*" >&2; }
die() { printf '[prometheus.sh] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi

find_bin() { # NAME ENV_VALUE
  if [ -n "$2" ]; then
    [ -x "$2" ] || die "$1 is set to $2, which is not an executable file"
    printf '%s\n' "$2"
  else
    command -v "$1" || true
  fi
}

prometheus=$(find_bin prometheus "${PROMETHEUS_BIN:-}")
promtool=$(find_bin promtool "${PROMTOOL_BIN:-}")
if [ -z "$prometheus" ] || [ -z "$promtool" ]; then
  command -v apt-get >/dev/null 2>&1 || die "need Debian's prometheus package, but apt-get is not available"
  apt=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
  # Where systemd runs, the package also starts its own service (:9090); the tests do not use
  # it, they start a server of their own on a free port.
  if ! apt-cache show --no-all-versions prometheus >/dev/null 2>&1; then
    log "apt-get update (no candidate for prometheus)"
    "${apt[@]}" update -q
  fi
  log "apt-get install prometheus"
  "${apt[@]}" install -y -q --no-install-recommends prometheus ||
    { "${apt[@]}" update -q && "${apt[@]}" install -y -q --no-install-recommends prometheus; } ||
    die "apt-get install prometheus failed"
  prometheus=$(command -v prometheus) || die "the prometheus package installed no prometheus"
  promtool=$(command -v promtool) || die "the prometheus package installed no promtool"
fi
log "$("$promtool" --version 2>&1 | head -n1)"
printf 'PROMETHEUS_BIN=%s\nPROMTOOL_BIN=%s\n' "$prometheus" "$promtool" >&3
