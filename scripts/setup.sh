#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine with rustup lacks to build and test
# wasmkube. Idempotent: quick when everything is already there.
set -euo pipefail

need_apt=()
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubectl)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
# The dashboard's browser test drives headless Chromium through chromedriver.
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "setup: installing ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

installed=$(rustup target list --installed)
for t in wasm32-wasip1 wasm32-wasip2; do
  if ! grep -qx "$t" <<<"$installed"; then
    echo "setup: adding rust target $t" >&2
    rustup target add "$t" >/dev/null
  fi
done
