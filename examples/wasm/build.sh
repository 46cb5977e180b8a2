#!/usr/bin/env bash
# Builds the example workloads into OUT_DIR (default: examples/wasm/out) as WASI preview 1
# modules: Rust with Debian's rustc (1.63, target wasm32-wasi; a rustup toolchain with the
# wasm32-wasip1 target works too), C with clang and wasi-libc.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/out}"
mkdir -p "$out"

rustc_wasm=""
if [ -x /usr/bin/rustc ] && /usr/bin/rustc --print target-list | grep -x wasm32-wasi >/dev/null; then
  rustc_wasm="/usr/bin/rustc --target wasm32-wasi"
elif command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -x wasm32-wasip1 >/dev/null; then
  rustc_wasm="rustc --target wasm32-wasip1"
else
  echo "no Rust wasm32 toolchain: apt-get install rustc libstd-rust-dev-wasm32 lld-14" >&2
  exit 1
fi
command -v clang >/dev/null || { echo "no clang: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32" >&2; exit 1; }

for src in "$here"/*.rs; do
  name="$(basename "$src" .rs)"
  $rustc_wasm -O -C strip=symbols --edition 2021 "$src" -o "$out/$name.wasm"
done
for src in "$here"/*.c; do
  name="$(basename "$src" .c)"
  clang --target=wasm32-wasi -O2 "$src" -o "$out/$name.wasm"
done
ls "$out"
