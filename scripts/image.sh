#!/usr/bin/env bash
# Builds the container image from the project's own Dockerfile without a Docker engine, and
# smoke-runs it as the chart runs the pod.
#
#   scripts/image.sh              # build, export, smoke-run
#   SKIP_SMOKE=1 scripts/image.sh # build and export only
#
# 1. Tools, when missing: buildah, podman, runc, musl-tools (Debian), the Rust musl target.
# 2. The static musl release binary (target/musl; CC=musl-gcc for ring), checked static.
# 3. The Dockerfile's base, gcr.io/distroless/static-debian12:nonroot, assembled the way
#    distroless assembles it, from Debian's ca-certificates, tzdata and netbase, and tagged
#    locally under that name (no registry is reachable here). The Dockerfile users build with
#    Docker is unchanged: `--build-context builder=DIR` stands in for its builder stage with
#    the binary built in step 2.
# 4. target/image/hss-operator.oci.tar: the image as an OCI archive.
# 5. Smoke run, as the chart runs the pod (user 65532, read-only root filesystem, every
#    capability dropped, no privilege escalation): `--version`, then `run` against a
#    throw-away API server (scripts/control-plane.sh) and the HSS simulator until one
#    ClusterScanTask reaches Succeeded.
#
# Storage is private (target/image/storage, vfs driver); nothing touches the host's images.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/target/image
STORE=(--root "$OUT/storage" --runroot "$OUT/run" --storage-driver vfs)
IMAGE=localhost/hss-operator:$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
BASE=gcr.io/distroless/static-debian12:nonroot
TARGET=x86_64-unknown-linux-musl
started=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(( $(date +%s) - started ))" "$*" >&2; }
mkdir -p "$OUT"

step "tools"
missing=()
for t in buildah:buildah podman:podman runc:runc musl-gcc:musl-tools; do
  command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${missing[@]}" >&2
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

step "static binary ($TARGET)"
t0=$(date +%s)
CC_x86_64_unknown_linux_musl=musl-gcc CARGO_PROFILE_RELEASE_STRIP=symbols \
  CARGO_TARGET_DIR=target/musl cargo build --release --locked --target "$TARGET" --bin hss-operator
BIN=target/musl/$TARGET/release/hss-operator
if readelf -d "$BIN" | grep -q NEEDED; then
  echo "hss-operator is not static" >&2
  exit 1
fi
CTX=$OUT/builder
rm -rf "$CTX" && install -D -m 0755 "$BIN" "$CTX/out/hss-operator"
echo "binary: $(du -h "$BIN" | cut -f1), $(( $(date +%s) - t0 ))s" >&2

step "base image $BASE (from Debian packages)"
if ! buildah "${STORE[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  debs=$OUT/debs rootfs=$OUT/base-rootfs
  rm -rf "$debs" "$rootfs" && mkdir -p "$debs" "$rootfs"
  (cd "$debs" && apt-get download ca-certificates tzdata netbase >&2)
  for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$rootfs"; done
  # What the packages' maintainer scripts and distroless's own rules would have done.
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
  cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  chmod 1777 "$rootfs/tmp"
  chown 65532:65532 "$rootfs/home/nonroot"
  rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/lintian"
  ctr=$(buildah "${STORE[@]}" from scratch)
  mnt=$(buildah "${STORE[@]}" mount "$ctr")
  cp -a "$rootfs/." "$mnt/"
  buildah "${STORE[@]}" umount "$ctr" >/dev/null
  buildah "${STORE[@]}" config --user 65532:65532 --workingdir /home/nonroot \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$ctr"
  buildah "${STORE[@]}" commit --rm "$ctr" "$BASE" >&2
fi

step "image from the Dockerfile"
t0=$(date +%s)
buildah "${STORE[@]}" bud --isolation chroot --pull=never --layers=false \
  --build-context builder="$CTX" -f Dockerfile -t "$IMAGE" . >&2
rm -f "$OUT/hss-operator.oci.tar"
buildah "${STORE[@]}" push "$IMAGE" "oci-archive:$OUT/hss-operator.oci.tar:$IMAGE" >&2
echo "image: $IMAGE, $(du -h "$OUT/hss-operator.oci.tar" | cut -f1) OCI archive, $(( $(date +%s) - t0 ))s" >&2

[ -n "${SKIP_SMOKE:-}" ] && exit 0

# As the chart runs the pod: securityContext of values.yaml.
PODMAN=(podman "${STORE[@]}" --cgroup-manager cgroupfs --runtime runc --events-backend file)
RUN=("${PODMAN[@]}" run --rm --pull=never --ulimit nofile=20000:20000 --ulimit nproc=4096:4096
  --user 65532:65532 --read-only --cap-drop ALL --security-opt no-new-privileges)

step "smoke: --version"
"${RUN[@]}" --network none "$IMAGE" --version

step "smoke: run against a test API server and the HSS simulator"
t0=$(date +%s)
CP=$OUT/control-plane
SIM_PID=''
NAME=hss-operator-smoke-$$
cleanup() {
  "${PODMAN[@]}" logs "$NAME" >"$OUT/operator.log" 2>&1 || true
  "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; fi
  bash scripts/control-plane.sh stop "$CP" >/dev/null 2>&1 || true
}
trap cleanup EXIT
eval "$(bash scripts/kube-apiserver.sh)"
export KUBE_APISERVER_BIN ETCD_BIN
eval "$(bash scripts/control-plane.sh start "$CP")"
step "control plane up"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" simulate-hss --listen "127.0.0.1:$port" --credential AKSMOKE:SKSMOKE --project-id smoke \
  --finish-after 3s >"$OUT/simulator.log" 2>&1 &
SIM_PID=$!
"$BIN" crd >"$OUT/crds.yaml"
# The pod's user reads its kubeconfig (a throw-away cluster's admin token), as a pod reads
# its projected ServiceAccount token.
install -m 0600 -o 65532 -g 65532 "$CP/kubeconfig" "$OUT/kubeconfig"
PY=$(scripts/deploy-venv.sh)
export KUBE_SERVER ADMIN_TOKEN KUBE_CA=$CP/pki/ca.crt
"$PY" scripts/deploy/smoke.py crds "$OUT/crds.yaml" 60
step "CRDs established; starting the operator's image"
"${PODMAN[@]}" run -d --name "$NAME" --pull=never --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
  --user 65532:65532 --read-only --cap-drop ALL --security-opt no-new-privileges --network host \
  -v "$OUT/kubeconfig:/etc/hss-operator/kubeconfig:ro" -e KUBECONFIG=/etc/hss-operator/kubeconfig \
  -e HUAWEICLOUD_SDK_AK=AKSMOKE -e HUAWEICLOUD_SDK_SK=SKSMOKE -e POD_NAME="$NAME" \
  "$IMAGE" run --endpoint "http://127.0.0.1:$port" --project-id smoke --namespace smoke \
  --disable-triggers --poll-interval 1s --admin-listen 127.0.0.1:0 \
  --log-format plain >/dev/null
if ! "$PY" scripts/deploy/smoke.py scan smoke 120; then
  "${PODMAN[@]}" logs "$NAME" 2>&1 | tail -n 40 >&2
  echo "image smoke test: FAIL (operator log: $OUT/operator.log)" >&2
  exit 1
fi
echo "image smoke test: PASS (run ${t0:+$(( $(date +%s) - t0 ))s}; total $(( $(date +%s) - started ))s)" >&2
