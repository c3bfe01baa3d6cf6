#!/usr/bin/env bash
# Starts the all-in-one wasmkube server (embedded store, local node) in the
# background and runs the `hello` sample through it with kubectl.
#
#   scripts/demo.sh        start (if needed) and run hello
#   scripts/demo.sh stop   stop the server this script started
#
# The server keeps running afterwards so you can follow the kubectl
# walkthrough in the README; its data lives in $WASMKUBE_DATA_DIR
# (default: ./.wasmkube-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${WASMKUBE_DATA_DIR:-$PWD/.wasmkube-demo}
PORT=${WASMKUBE_PORT:-6443}
KUBECONFIG_PATH=$DATA/kubeconfig
BIN=$PWD/target/release/wasmkube

if [ "${1:-}" = stop ]; then
  if [ -x "$BIN" ]; then
    "$BIN" down --data-dir "$DATA"
  else
    echo "no wasmkube binary at $BIN: nothing was started"
  fi
  exit 0
fi

scripts/setup.sh
echo "==> building wasmkube and the samples (the first build takes a few minutes)"
cargo build --release -p wasmkube
cargo build --release --target wasm32-wasip1 --manifest-path wasm-samples/Cargo.toml
SAMPLES=$PWD/wasm-samples/target/wasm32-wasip1/release

echo "==> wasmkube up (log: $DATA/wasmkube.log)"
"$BIN" up --data-dir "$DATA" -- --port "$PORT" >/dev/null

export KUBECONFIG=$KUBECONFIG_PATH
echo "==> wasmkube push hello.wasm hello:v1"
"$BIN" push "$SAMPLES/hello.wasm" hello:v1
kubectl delete pod hello --ignore-not-found --wait=true >/dev/null
echo "==> kubectl apply -f wasm-samples/manifests/hello.yaml"
kubectl apply -f wasm-samples/manifests/hello.yaml
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/hello --timeout=120s >/dev/null
echo "==> kubectl get pods -o wide"
kubectl get pods -o wide
echo "==> kubectl logs hello"
kubectl logs hello
cat <<MSG

wasmkube keeps running ($("$BIN" status --data-dir "$DATA" | head -1)). To use it with kubectl:
  export KUBECONFIG=$KUBECONFIG_PATH
Stop it with: scripts/demo.sh stop
MSG
