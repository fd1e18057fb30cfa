#!/usr/bin/env bash
# The kernel crate's tests built for aarch64 and run under qemu-user, so that the NEON paths (which
# the tests compare with the scalar reference, path by path) are checked on x86-64 machines too.
# Installs what is missing first (the Rust target, qemu-user, the cross linker and libc; each only
# once), then lints the aarch64 code, which the native clippy run never compiles, and runs the tests.
# qemu is for correctness only: its timings mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu # qemu's -L and the cross gcc's libc, as in .cargo/config.toml

fail() { echo "test-aarch64: $*" >&2; exit 1; }

command -v rustup >/dev/null || fail "rustup is needed to add the $TARGET target"
if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "test-aarch64: adding the Rust target $TARGET" >&2
  rustup target add "$TARGET"
fi

if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
  || [ ! -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ]; then
  command -v apt-get >/dev/null || fail "install qemu-user, gcc-aarch64-linux-gnu and libc6-dev-arm64-cross"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "test-aarch64: installing qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
  command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null \
    && [ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ] || fail "the cross toolchain is still incomplete after apt-get"
fi

echo "== cargo clippy --target $TARGET -p lowbit-kernels"
cargo clippy --release --target "$TARGET" -p lowbit-kernels --all-targets -- -D warnings

# qemu's `max` CPU has dotprod, so both NEON variants of the quantized kernels are registered and
# tested; LOWBIT_REQUIRE_DOTPROD makes a test fail if the emulated CPU ever lacks it.
echo "== cargo test --target $TARGET -p lowbit-kernels (qemu-aarch64, cpu max)"
QEMU_CPU=max LOWBIT_REQUIRE_DOTPROD=1 cargo test --release --target "$TARGET" -p lowbit-kernels
