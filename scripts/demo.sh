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
PIDFILE=$DATA/server.pid
LOG=$DATA/server.log

if [ "${1:-}" = stop ]; then
  if [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "stopped wasmkube (pid $(cat "$PIDFILE"))"
  else
    echo "no wasmkube server from this script is running"
  fi
  rm -f "$PIDFILE"
  exit 0
fi

scripts/setup.sh
echo "==> building wasmkube and the samples (the first build takes a few minutes)"
cargo build --release -p wasmkube
cargo build --release --target wasm32-wasip1 --manifest-path wasm-samples/Cargo.toml
BIN=$PWD/target/release/wasmkube
SAMPLES=$PWD/wasm-samples/target/wasm32-wasip1/release
mkdir -p "$DATA"

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "==> wasmkube already running (pid $(cat "$PIDFILE"))"
else
  echo "==> starting wasmkube server (log: $LOG)"
  nohup "$BIN" server --data-dir "$DATA" --port "$PORT" >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 600); do
    grep -q "wasmkube is ready" "$LOG" 2>/dev/null && break
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { cat "$LOG"; echo "wasmkube exited" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "wasmkube is ready" "$LOG" || { tail -50 "$LOG"; echo "wasmkube did not become ready" >&2; exit 1; }
fi

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

wasmkube keeps running (pid $(cat "$PIDFILE")). To use it with kubectl:
  export KUBECONFIG=$KUBECONFIG_PATH
Stop it with: scripts/demo.sh stop
MSG
