#!/usr/bin/env bash
# Cross-builds the `wasmkube` binary (server, agent and CLI in one) for
# 64-bit ARM Linux (aarch64-unknown-linux-gnu) on a Debian 12 x86_64 host,
# with Debian's cross gcc as linker and C compiler, and installs qemu-user so
# the result can be tried here. See docs/agent.md, "Edge hardware (aarch64)".
#
#   scripts/cross-aarch64.sh            # release build
#   PROFILE=dev scripts/cross-aarch64.sh
#
# Output: target/cross/aarch64-unknown-linux-gnu/<release|debug>/wasmkube.
# A separate target dir keeps this long build from holding the lock of the
# usual target/ (and its artifacts are all target-specific anyway).
# Run it with `nice -n 19` on a shared machine.
set -euo pipefail

cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
PROFILE=${PROFILE:-release}
TARGET_DIR=${CROSS_TARGET_DIR:-target/cross}

need_apt=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need_apt+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || need_apt+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || command -v qemu-aarch64-static >/dev/null 2>&1 \
  || need_apt+=(qemu-user)
# protoc runs on the build host (etcd-client's build script), not the target.
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "cross-aarch64: installing ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "cross-aarch64: adding rust target $TARGET" >&2
  rustup target add "$TARGET" >/dev/null
fi

# The linker for the final binary, and the C toolchain for the crates that
# compile C for the target (ring, zstd-sys) through the `cc` crate.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# `cargo run/test --target aarch64-unknown-linux-gnu` then runs under qemu.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"

case "$PROFILE" in
  release) profile_args=(--release); out=release ;;
  dev) profile_args=(); out=debug ;;
  *) profile_args=(--profile "$PROFILE"); out=$PROFILE ;;
esac

cargo build "${profile_args[@]}" -p wasmkube --bin wasmkube \
  --target "$TARGET" --target-dir "$TARGET_DIR"

bin="$TARGET_DIR/$TARGET/$out/wasmkube"
echo "cross-aarch64: built $bin ($(du -h "$bin" | cut -f1))" >&2
if command -v file >/dev/null 2>&1; then file "$bin" >&2; fi
echo "cross-aarch64: try it with: qemu-aarch64 -L /usr/aarch64-linux-gnu $bin --help" >&2
