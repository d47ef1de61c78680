#!/usr/bin/env bash
# Builds the container image from the project's own Dockerfile without a Docker engine, exports
# it as an OCI archive and smoke-runs that archive as the Helm chart runs the pod.
#
#   scripts/image.sh              # build, export, smoke-run; prints PASS or FAIL last
#   SKIP_SMOKE=1 scripts/image.sh # build and export only
#
# Needs root, Debian bookworm, the Rust toolchain and python3; installs the rest when missing.
#
# 1. Tools: buildah, podman, runc, musl-tools, binutils, curl (apt-get), the Rust musl target.
# 2. The static musl release binary in its own target dir (target/musl; CC=musl-gcc for ring),
#    checked static (no NEEDED entries, no interpreter).
# 3. The Dockerfile's base, gcr.io/distroless/static-debian12:nonroot, assembled the way
#    distroless assembles it, from Debian's ca-certificates, tzdata and netbase, and tagged
#    locally under that name (no registry is reachable here). The Dockerfile users build with
#    Docker is used unchanged: `--build-context builder=DIR` stands in for its builder stage
#    with the binary from step 2 at DIR/out/hss-operator, so its final stage is what is tested.
# 4. target/image/hss-operator.oci.tar: the image as an OCI archive (push it with
#    `skopeo copy oci-archive:target/image/hss-operator.oci.tar docker://REGISTRY/NAME:TAG`).
# 5. Smoke run of that archive, loaded into a separate store, with the chart's securityContext
#    (user 65532:65532, read-only root filesystem, every capability dropped, no privilege
#    escalation): `--version`, then `run` against a throw-away API server
#    (scripts/control-plane.sh) and the HSS simulator until one ClusterScanTask is Succeeded,
#    with /readyz probed as the kubelet would and /metrics scraped as Prometheus does (HTTPS,
#    a ServiceAccount token bound to a metrics-reader ClusterRole; 401 without a token).
#
# Everything lives under target/image (storage with the vfs driver; nothing touches the host's
# images) and one run at a time holds target/image/.lock. The base is assembled once and
# reused; `rm -rf target/image` starts over. Logs of the last smoke run: target/image/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/target/image
TARGET=x86_64-unknown-linux-musl
BIN=$ROOT/target/musl/$TARGET/release/hss-operator
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
IMAGE=localhost/hss-operator:$VERSION
BASE=gcr.io/distroless/static-debian12:nonroot
ARCHIVE=$OUT/hss-operator.oci.tar
BUILD_STORE=(--root "$OUT/storage" --runroot "$OUT/run" --storage-driver vfs)
SMOKE_STORE=(--root "$OUT/smoke-storage" --runroot "$OUT/smoke-run" --storage-driver vfs)
PODMAN=(podman "${SMOKE_STORE[@]}" --cgroup-manager cgroupfs --runtime runc --events-backend file)
# The chart's securityContext (values.yaml), plus the rlimits podman needs on these machines.
POD_SECURITY=(--user 65532:65532 --read-only --cap-drop ALL --security-opt no-new-privileges
  --ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
NS=smoke
SCAN='scan-all-clusters'

started=$SECONDS
phase_start=$SECONDS
timings=()
step() { printf '\n==> [%ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
phase_done() { timings+=("$1: $((SECONDS - phase_start))s"); phase_start=$SECONDS; }
die() { printf 'image.sh: %s\n' "$*" >&2; exit 1; }

SIM_PID='' CP='' CONTAINER=''
finish() {
  local rc=$?
  set +e
  if [ -n "$CONTAINER" ]; then
    "${PODMAN[@]}" logs "$CONTAINER" >"$OUT/operator.log" 2>&1
    if [ "$rc" != 0 ]; then
      echo "---- last 30 lines of the operator's log ($OUT/operator.log) ----" >&2
      tail -n 30 "$OUT/operator.log" >&2
    fi
    "${PODMAN[@]}" rm -f "$CONTAINER" >/dev/null 2>&1
  fi
  if [ -n "$SIM_PID" ]; then
    kill "$SIM_PID" 2>/dev/null
    wait "$SIM_PID" 2>/dev/null
  fi
  [ -n "$CP" ] && bash scripts/control-plane.sh stop "$CP" >/dev/null 2>&1
  rm -f "$OUT/kubeconfig"
  if [ "${#timings[@]}" -gt 0 ]; then
    joined=$(printf '%s, ' "${timings[@]}")
    printf '\nimage.sh timings: %s\n' "${joined%, }" >&2
  fi
  if [ "$rc" = 0 ]; then
    printf 'image.sh: PASS (%s, %ss)\n' "${RESULT:-built}" "$((SECONDS - started))" >&2
  else
    printf 'image.sh: FAIL (exit %s after %ss)\n' "$rc" "$((SECONDS - started))" >&2
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM HUP

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock -w 1800 9 || die "another scripts/image.sh still holds $OUT/.lock after 30 min"
[ "$SECONDS" = "$started" ] || timings+=("waiting for another run: $((SECONDS - started))s")
phase_start=$SECONDS

step "tools"
[ "$(id -u)" = 0 ] || die "run as root (rootless podman needs /etc/subuid ranges these machines lack)"
missing=()
for t in buildah:buildah podman:podman runc:runc musl-gcc:musl-tools readelf:binutils curl:curl; do
  command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get -o DPkg::Lock::Timeout=600 update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${missing[@]}" >&2
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
phase_done tools

step "static binary ($TARGET, target/musl)"
CC_x86_64_unknown_linux_musl=musl-gcc CARGO_PROFILE_RELEASE_STRIP=symbols \
  CARGO_TARGET_DIR="$ROOT/target/musl" cargo build --release --locked --target "$TARGET" -p hss-operator --bin hss-operator
if readelf -d "$BIN" | grep -q NEEDED || readelf -l "$BIN" | grep -q INTERP; then
  readelf -d -l "$BIN" >&2
  die "$BIN is not static"
fi
CTX=$OUT/builder # stands in for the Dockerfile's builder stage: COPY --from=builder /out/hss-operator
rm -rf "$CTX" && install -D -m 0755 "$BIN" "$CTX/out/hss-operator"
echo "binary: $(du -h "$BIN" | cut -f1), static" >&2
phase_done "musl build"

step "base image $BASE (from Debian packages)"
if buildah "${BUILD_STORE[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "reusing the base assembled earlier" >&2
else
  debs=$OUT/debs rootfs=$OUT/base-rootfs
  rm -rf "$debs" "$rootfs" && mkdir -p "$debs" "$rootfs"
  (cd "$debs" && { apt-get download ca-certificates tzdata netbase >&2 ||
    { apt-get -o DPkg::Lock::Timeout=600 update -q >&2 && apt-get download ca-certificates tzdata netbase >&2; }; })
  for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$rootfs"; done
  # What the packages' maintainer scripts and distroless's own rules would have done.
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
  cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$rootfs/etc/group"
  chmod 1777 "$rootfs/tmp"
  chown 65532:65532 "$rootfs/home/nonroot"
  chmod 0700 "$rootfs/home/nonroot"
  # Nothing runs maintainer tools in an image without a shell.
  rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/lintian" \
    "$rootfs/usr/sbin" "$rootfs/etc/ca-certificates"
  ctr=$(buildah "${BUILD_STORE[@]}" from scratch)
  mnt=$(buildah "${BUILD_STORE[@]}" mount "$ctr")
  cp -a "$rootfs/." "$mnt/" # keeps ownership (buildah copy would make everything 0:0)
  buildah "${BUILD_STORE[@]}" umount "$ctr" >/dev/null
  buildah "${BUILD_STORE[@]}" config --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$ctr"
  buildah "${BUILD_STORE[@]}" commit --rm "$ctr" "$BASE" >&2
fi
phase_done base

step "image from the Dockerfile"
buildah "${BUILD_STORE[@]}" bud --isolation chroot --pull=never --layers=false \
  --build-context builder="$CTX" -f Dockerfile -t "$IMAGE" . >&2
buildah "${BUILD_STORE[@]}" rmi --prune >/dev/null 2>&1 || true # earlier builds' untagged images
rm -f "$ARCHIVE.tmp"
buildah "${BUILD_STORE[@]}" push "$IMAGE" "oci-archive:$ARCHIVE.tmp:$IMAGE" >&2
mv "$ARCHIVE.tmp" "$ARCHIVE"
echo "image: $IMAGE -> $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))" >&2
phase_done "image build"

if [ -n "${SKIP_SMOKE:-}" ]; then
  RESULT="built $ARCHIVE, smoke run skipped"
  exit 0
fi

step "smoke: load the archive into a clean store; --version"
"${PODMAN[@]}" rm -af >/dev/null 2>&1 || true
"${PODMAN[@]}" rmi -af >/dev/null 2>&1 || true
"${PODMAN[@]}" load -q -i "$ARCHIVE" >&2
config=$("${PODMAN[@]}" image inspect --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$IMAGE")
echo "image config: $config" >&2
[ "$config" = '65532:65532 ["/hss-operator"] ["run"]' ] || die "unexpected image config: $config"
got=$("${PODMAN[@]}" run --rm --pull=never --network none "${POD_SECURITY[@]}" "$IMAGE" --version)
[ "$got" = "hss-operator $VERSION" ] || die "--version printed '$got', expected 'hss-operator $VERSION'"
echo "$got" >&2
phase_done "smoke --version"

step "smoke: a throw-away API server and the HSS simulator"
# The simulator is not in the image: it runs on the host, from its own package.
SIM=${HSS_SIMULATOR_BIN:-$ROOT/target/debug/hss-simulator}
[ -x "$SIM" ] || cargo build --locked --quiet --workspace --bin hss-simulator
CP=$OUT/control-plane
bash scripts/control-plane.sh stop "$CP" >/dev/null 2>&1 || true # a killed earlier run's leftovers
bash scripts/control-plane.sh start "$CP" >/dev/null
KUBE_SERVER=$(sed -n 's/^KUBE_SERVER=//p' "$CP/env")
ADMIN_TOKEN=$(sed -n 's/^ADMIN_TOKEN=//p' "$CP/env")
rm -f "$OUT/simulator.log" # the background job truncates it only once it runs
"$SIM" --listen 127.0.0.1:0 --credential AKDEMO:SKDEMO --project-id demo \
  --finish-after 5s >"$OUT/simulator.log" 2>&1 &
SIM_PID=$!
deadline=$((SECONDS + 10))
until HSS=$(sed -n 's/^listening on //p' "$OUT/simulator.log") && [ -n "$HSS" ]; do
  kill -0 "$SIM_PID" 2>/dev/null || { cat "$OUT/simulator.log" >&2; die "the simulator exited"; }
  [ "$SECONDS" -lt "$deadline" ] || die "the simulator did not start in 10s"
  sleep 0.1
done
echo "HSS simulator: $HSS" >&2
phase_done "control plane + simulator"

# The API server, as the admin: api METHOD PATH [CONTENT-TYPE BODY-FILE]; prints the body,
# fails (saying why on stderr) on an HTTP error.
api() {
  local args=(-sS --fail-with-body --max-time 10 --cacert "$CP/pki/ca.crt"
    -H "Authorization: Bearer $ADMIN_TOKEN" -X "$1") body rc=0
  [ $# -lt 4 ] || args+=(-H "Content-Type: $3" --data-binary "@$4")
  body=$(curl "${args[@]}" "$KUBE_SERVER$2") || rc=$?
  [ "$rc" = 0 ] || { printf '%s %s failed (curl exit %s): %s\n' "$1" "$2" "$rc" "$body" >&2; return "$rc"; }
  printf '%s\n' "$body"
}
# A field of a JSON document on stdin, by a Python expression on `o`; empty when missing
# (or when stdin is not JSON).
field() { python3 -c 'import json, sys
try: o = json.load(sys.stdin)
except ValueError: o = {}
try: v = eval(sys.argv[1], {"o": o, "json": json})
except (KeyError, IndexError, TypeError): v = ""
print(v if v is not None else "")' "$1"; }

step "smoke: CRDs (hss-operator crd), namespace, the operator's image"
# One YAML document per file: the API server takes application/yaml, one object per request.
rm -rf "$OUT/crds" && mkdir -p "$OUT/crds"
"$BIN" crd | awk -v dir="$OUT/crds" '/^---$/ { n++; next } { print > (dir "/" n+0 ".yaml") }'
crds=()
for f in "$OUT"/crds/*.yaml; do
  grep -q '^kind: CustomResourceDefinition' "$f" || continue
  name=$(api POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions application/yaml "$f" | field 'o["metadata"]["name"]')
  crds+=("$name")
done
[ "${#crds[@]}" -ge 1 ] || die "hss-operator crd printed no CustomResourceDefinition"
deadline=$((SECONDS + 60))
for name in "${crds[@]}"; do
  until [ "$(api GET "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$name" |
    field '[c["status"] for c in o["status"]["conditions"] if c["type"] == "Established"][0]')" = True ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "CRD $name not Established after 60s"
    sleep 0.2
  done
done
echo "CRDs established: ${crds[*]}" >&2
printf '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"%s"}}' "$NS" >"$OUT/namespace.json"
api POST /api/v1/namespaces application/json "$OUT/namespace.json" >/dev/null

# The pod's user must be able to read its credentials, as it reads its projected token.
install -m 0600 -o 65532 -g 65532 "$CP/kubeconfig" "$OUT/kubeconfig"
admin_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
CONTAINER=hss-operator-smoke-$$
# The chart's args (deployment.yaml) with the simulator as endpoint and credentials from the
# environment (credentials.mode=env); --poll-interval 1s (the budget still spaces the polls).
"${PODMAN[@]}" run -d --name "$CONTAINER" --pull=never "${POD_SECURITY[@]}" --network host \
  -v "$OUT/kubeconfig:/etc/hss-operator/kubeconfig:ro" -e KUBECONFIG=/etc/hss-operator/kubeconfig \
  -e HUAWEICLOUD_SDK_AK=AKDEMO -e HUAWEICLOUD_SDK_SK=SKDEMO \
  -e POD_NAME="$CONTAINER" -e POD_NAMESPACE="$NS" \
  "$IMAGE" run --admin-listen="127.0.0.1:$admin_port" --metrics-listen="127.0.0.1:$metrics_port" --log-format=json --log-filter=info \
  --poll-interval=1s --budget-per-minute=5 --endpoint="$HSS" --allow-insecure-endpoints --project-id=demo \
  --namespace="$NS" --claims-configmap="$NS/hss-operator-claims" --disable-triggers >/dev/null
running() {
  [ "$("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" = true ] ||
    die "the operator's container exited: $("${PODMAN[@]}" inspect --format '{{.State.Status}} (exit code {{.State.ExitCode}})' "$CONTAINER")"
}
deadline=$((SECONDS + 60))
until [ "$(curl -sS --max-time 2 "http://127.0.0.1:$admin_port/readyz" 2>/dev/null)" = ok ]; do
  running
  [ "$SECONDS" -lt "$deadline" ] || die "/readyz not ok after 60s"
  sleep 0.2
done
echo "operator ready (/readyz ok)" >&2
phase_done "CRDs + operator ready"

step "smoke: one ClusterScanTask until Succeeded (at most 120s)"
# deploy/samples/cluster-scan-all.yaml with the operator's own credentials (no Secret).
printf '%s' "{\"apiVersion\":\"hss.scanops.dev/v1alpha1\",\"kind\":\"ClusterScanTask\",\"metadata\":{\"name\":\"$SCAN\"},
  \"spec\":{\"taskType\":\"cluster_scan\",\"clusterScan\":{\"rangeType\":\"all_cluster\",
  \"scanTypes\":[\"cluster_vul\",\"risk_assessment\",\"benchmark\"]}}}" >"$OUT/scan.json"
scan=/apis/hss.scanops.dev/v1alpha1/namespaces/$NS/clusterscantasks
api POST "$scan" application/json "$OUT/scan.json" >/dev/null
deadline=$((SECONDS + 120)) last=''
while :; do
  obj=$(api GET "$scan/$SCAN") || obj='{}'
  phase=$(field 'o["status"]["phase"]' <<<"$obj")
  [ "$phase" = "$last" ] || { echo "  [$((SECONDS - phase_start))s] phase: ${phase:-(none)}" >&2; last=$phase; }
  case "$phase" in
    Succeeded) break ;;
    PartiallyFailed | Failed) field 'json.dumps(o.get("status"), indent=1)' <<<"$obj" >&2
      die "the ClusterScanTask ended $phase" ;;
  esac
  running
  [ "$SECONDS" -lt "$deadline" ] || { field 'json.dumps(o.get("status"), indent=1)' <<<"$obj" >&2
    die "the ClusterScanTask is not Succeeded after 120s"; }
  sleep 1
done
task=$(field 'o["status"]["taskId"]' <<<"$obj")
# Exactly one HSS task for one object, as the operator's own metrics count it, read as
# Prometheus reads them: HTTPS (self-signed, not verified) with a ServiceAccount token that a
# metrics-reader ClusterRole allows; without a token the answer is 401.
printf '%s' '{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"prometheus"}}' >"$OUT/sa.json"
api POST "/api/v1/namespaces/$NS/serviceaccounts" application/json "$OUT/sa.json" >/dev/null
printf '%s' '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"hss-smoke-metrics-reader"},
  "rules":[{"nonResourceURLs":["/metrics"],"verbs":["get"]}]}' >"$OUT/reader.json"
api POST /apis/rbac.authorization.k8s.io/v1/clusterroles application/json "$OUT/reader.json" >/dev/null ||
  api GET /apis/rbac.authorization.k8s.io/v1/clusterroles/hss-smoke-metrics-reader >/dev/null
printf '%s' "{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRoleBinding\",\"metadata\":{\"name\":\"hss-smoke-metrics-reader-$NS\"},
  \"roleRef\":{\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"ClusterRole\",\"name\":\"hss-smoke-metrics-reader\"},
  \"subjects\":[{\"kind\":\"ServiceAccount\",\"name\":\"prometheus\",\"namespace\":\"$NS\"}]}" >"$OUT/binding.json"
api POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings application/json "$OUT/binding.json" >/dev/null
printf '%s' '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":600}}' >"$OUT/token.json"
reader_token=$(api POST "/api/v1/namespaces/$NS/serviceaccounts/prometheus/token" application/json "$OUT/token.json" |
  field 'o["status"]["token"]')
[ -n "$reader_token" ] || die "no TokenRequest token for the metrics reader"
unauthenticated=$(curl -sSk --max-time 5 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$metrics_port/metrics")
[ "$unauthenticated" = 401 ] || die "/metrics without a token answered $unauthenticated, expected 401"
metrics=$(curl -sSk --fail-with-body --max-time 5 -H "Authorization: Bearer $reader_token" "https://127.0.0.1:$metrics_port/metrics")
grep -qx 'hss_operator_hss_calls_total{api="CreateTask",outcome="success"} 1' <<<"$metrics" ||
  { grep '^hss_operator_hss_calls_total' <<<"$metrics" >&2; die "/metrics does not count exactly one successful CreateTask"; }
phase_done "scan"
RESULT="$IMAGE from $ARCHIVE: --version, then ClusterScanTask $NS/$SCAN Succeeded (HSS task $task)"
