#!/usr/bin/env bash
# Runs the tests that need a real kube-apiserver against the one KUBE_APISERVER_BIN names
# (etcd from ETCD_BIN or scripts/kube-apiserver.sh). ./scripts/test.sh already runs them on
# the 1.20 server a lone clone builds; CI (.ci/run) runs them again on a current Kubernetes,
# with HSS_REQUIRE_CEL=1 so the CEL admission test cannot skip.
#
#   KUBE_APISERVER_BIN=/path/to/kube-apiserver scripts/apiserver-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KUBE_APISERVER_BIN:?set KUBE_APISERVER_BIN to the kube-apiserver to test against}"
# The test tiers of hss-operator that start a control plane (hss_testkit::cluster::control_plane).
TARGETS=(apiserver install chaos)
if [ -z "${ETCD_BIN:-}" ]; then
  ETCD_BIN=$(KUBE_APISERVER_BIN='' bash scripts/kube-apiserver.sh | sed -n 's/^ETCD_BIN=//p' | tail -n1)
fi
export KUBE_APISERVER_BIN ETCD_BIN
args=()
for t in "${TARGETS[@]}"; do
  [ -f "crates/hss-operator/tests/$t/main.rs" ] && args+=(--test "$t")
done
echo "==> API-server tests on $("$KUBE_APISERVER_BIN" --version): ${TARGETS[*]}" >&2
exec cargo test --locked --no-fail-fast --workspace "${args[@]}"
