#!/usr/bin/env bash
# The operator end to end on this machine:
#   - KUBECONFIG unset: starts a local control plane (etcd + kube-apiserver, built and cached
#     on first use by scripts/kube-apiserver.sh); KUBECONFIG set: uses that cluster;
#   - starts the HSS simulator (`hss-simulator`) and `hss-operator run`;
#   - applies the samples and shows them progressing until every scan has finished;
#   - cleans up what it started (the namespace it created, processes, the control plane).
#
#   ./scripts/demo.sh            # DEMO_TIMEOUT=300 by default (seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NS=${DEMO_NAMESPACE:-hss-demo}
TIMEOUT=${DEMO_TIMEOUT:-300}
WORK=$(mktemp -d /tmp/hss-demo.XXXXXX)
PIDS=()
CP=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  say "cleaning up"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  if [ -z "$CP" ] && [ -n "${KUBECONFIG:-}" ]; then
    kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1
  fi
  [ -n "$CP" ] && bash scripts/control-plane.sh stop "$CP" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v kubectl >/dev/null || {
  echo "kubectl is needed (Debian: apt-get install kubernetes-client)" >&2
  exit 1
}

say "building hss-operator and hss-simulator (release)"
cargo build --release --locked -p hss-operator -p hss-simulator
BIN="$ROOT/target/release/hss-operator"
SIM="$ROOT/target/release/hss-simulator"

if [ -z "${KUBECONFIG:-}" ]; then
  say "starting a local control plane (first run builds kube-apiserver: ~5 min)"
  CP="$WORK/cp"
  bash scripts/control-plane.sh start "$CP" >/dev/null
  export KUBECONFIG="$CP/kubeconfig"
else
  say "using the cluster in KUBECONFIG=$KUBECONFIG"
fi

say "installing the CRDs"
# Servers older than 1.25 do not know the CEL rules; --validate=false lets them drop them.
kubectl apply --validate=false -f crds/crds.yaml

say "starting the HSS simulator"
"$SIM" --listen 127.0.0.1:0 --credential AKDEMO:SKDEMO --project-id demo \
  --run-after 5s --finish-after 20s --fail-cluster cce-sim-0003 >"$WORK/sim.out" 2>"$WORK/sim.log" &
PIDS+=($!)
for _ in $(seq 1 100); do
  URL=$(sed -n 's/^listening on //p' "$WORK/sim.out" | head -n1)
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "${URL:-}" ] || { echo "the simulator did not start" >&2; cat "$WORK/sim.log" >&2; exit 1; }
echo "simulator at $URL"

say "namespace $NS with a credentials Secret"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic hss-credentials \
  --from-literal=accessKey=AKDEMO --from-literal=secretKey=SKDEMO --dry-run=client -o yaml | kubectl apply -f -

say "starting hss-operator run (default budget: 5 CreateTask calls per minute)"
"$BIN" run --namespace "$NS" --endpoint "$URL" --allow-insecure-endpoints --project-id demo \
  --credentials-secret "$NS/hss-credentials" --poll-interval 5s --admin-listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 \
  --disable-triggers >"$WORK/operator.log" 2>&1 &
PIDS+=($!)

say "applying the samples"
# As they are: the samples name the simulator's clusters and leave region and project to the
# operator (crates/hss-operator/tests/client/submit_cli.rs runs each of them against the simulator).
for f in deploy/samples/cluster-scan-all.yaml deploy/samples/cluster-scan-specific.yaml deploy/samples/iac-scan.yaml; do
  kubectl -n "$NS" apply -f "$f"
done

say "watching (kubectl get cst -w); a scan of cluster cce-sim-0003 is set up to fail"
kubectl -n "$NS" get cst -w &
WATCH=$!
PIDS+=("$WATCH")
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  phases=$(kubectl -n "$NS" get cst -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}')
  unfinished=$(printf '%s\n' "$phases" | grep -cvE '^(Succeeded|PartiallyFailed|Failed)$' || true)
  [ "$unfinished" -eq 0 ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "scans did not finish within ${TIMEOUT}s; operator log:" >&2
    tail -n 40 "$WORK/operator.log" >&2
    exit 1
  fi
  sleep 2
done
kill "$WATCH" 2>/dev/null || true

say "results"
kubectl -n "$NS" get cst -o wide
kubectl -n "$NS" get cst -o jsonpath='{range .items[*]}{.metadata.name}{": "}{.status.phase}{", task "}{.status.taskId}{"\n"}{range .status.results[*]}{"    "}{.id}{" "}{.status}{"\n"}{end}{end}'
say "events"
kubectl -n "$NS" get events --sort-by=.metadata.creationTimestamp | tail -n 20
