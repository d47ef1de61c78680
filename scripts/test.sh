#!/usr/bin/env bash
# Runs every check and test of the project, installing what they need on a fresh machine:
# formatting, clippy, the kube-apiserver for integration tests (built once, cached), the
# official Huawei Cloud Python SDK for conformance tests, Prometheus and promtool (Debian's
# package) for the chart's alerts and dashboard, then cargo test and pytest.
#
#   ./scripts/test.sh            # everything
#   SKIP_LINT=1 ./scripts/test.sh
#   SKIP_IMAGE=1 ./scripts/test.sh   # without building and running the container image
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n==> %s\n' "$*" >&2; }
start=$(date +%s)

# CI builds once from clean: incremental artefacts (~4 GiB here) would only take disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
disk() { df -Ph . | awk 'NR==2 {print "disk: " $4 " free on " $6}' >&2; }
disk

step "cargo fetch"
cargo fetch --locked

if [ -z "${SKIP_LINT:-}" ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy"
  cargo clippy --locked --all-targets -- -D warnings
fi

step "kube-apiserver and etcd for integration tests"
bins=$(bash scripts/kube-apiserver.sh)
export KUBE_APISERVER_BIN ETCD_BIN
KUBE_APISERVER_BIN=$(printf '%s\n' "$bins" | sed -n 's/^KUBE_APISERVER_BIN=//p' | tail -n1)
ETCD_BIN=$(printf '%s\n' "$bins" | sed -n 's/^ETCD_BIN=//p' | tail -n1)

step "Python venv with the official Huawei Cloud SDK (conformance oracle)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import huaweicloudsdkhss, pytest' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
fi

step "generated files are up to date"
cargo build --locked --workspace --bins
./target/debug/hss-operator crd | diff -u crds/crds.yaml - || { echo "crds/ is stale: run 'cargo run -p hss-operator -- crd > crds/crds.yaml'" >&2; exit 1; }

step "crate boundaries: the HSS client has no Kubernetes, server or CLI crate in its tree"
bad=$(cargo tree --locked -p hss-client -e normal,features --prefix none \
  | grep -E '^(kube|k8s-openapi|axum|clap)[ -]|^hyper feature "server"' | sort -u || true)
[ -z "$bad" ] || { echo "hss-client depends on: $bad" >&2; exit 1; }
bad=$(cargo tree --locked -p hss-operator -e normal --prefix none | grep -E '^hss-simulator ' || true)
[ -z "$bad" ] || { echo "the operator links the simulator" >&2; exit 1; }

step "unit tests with HSS_* and HUAWEICLOUD_* set in the environment: none of them reads it"
env HSS_ALLOW_INSECURE_ENDPOINTS=true HSS_ENDPOINT=http://127.0.0.1:1 HSS_REGION=xx-hostile-1 \
  HUAWEICLOUD_SDK_AK=AKHOSTILE HUAWEICLOUD_SDK_SK=SKHOSTILE HUAWEICLOUD_SDK_PROJECT_ID=hostile \
  HSS_LOG_FORMAT=json RUST_LOG=trace POD_NAME=hostile-pod \
  cargo test --locked --workspace --lib --quiet

step "deploy: Helm chart, manifests, samples, Dockerfile, cargo-deny"
./scripts/check-deploy.sh

step "alerts and dashboard: promtool check/test rules, and a real Prometheus scraping the operator"
prom=$(bash scripts/prometheus.sh)
export PROMETHEUS_BIN PROMTOOL_BIN
PROMETHEUS_BIN=$(printf '%s\n' "$prom" | sed -n 's/^PROMETHEUS_BIN=//p' | tail -n1)
PROMTOOL_BIN=$(printf '%s\n' "$prom" | sed -n 's/^PROMTOOL_BIN=//p' | tail -n1)
HSS_OPERATOR_BIN="$ROOT/target/debug/hss-operator" HSS_SIMULATOR_BIN="$ROOT/target/debug/hss-simulator" \
  "$(scripts/deploy-venv.sh)" -m pytest -q -p no:cacheprovider scripts/deploy

step "cargo test"
cargo test --locked --workspace --all-targets

step "the container image: built from the Dockerfile and run as the chart runs the pod"
if [ -z "${SKIP_IMAGE:-}" ]; then
  ./scripts/image.sh
else
  echo "skipped (SKIP_IMAGE is set)" >&2
fi

step "SDK conformance (pytest)"
HSS_SIMULATOR_BIN="$ROOT/target/debug/hss-simulator" .venv/bin/python -m pytest -q crates/hss-simulator/conformance

disk; du -sh target >&2
printf '\nall checks passed in %ss\n' "$(( $(date +%s) - start ))" >&2
