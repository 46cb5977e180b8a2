#!/usr/bin/env bash
# Builds the example workloads into OUT_DIR (default: examples/wasm/out) as WASI preview 1
# modules: Rust with Debian's rustc (1.63, target wasm32-wasi; a rustup toolchain with the
# wasm32-wasip1 target works too), C with clang and wasi-libc.
#
# The HTTP function (http/*.c) is a reactor module for the wasi:http/proxy world: its C bindings
# come from `wit-bindgen c` (installed with cargo when missing) over the WASI HTTP WIT files that
# ship with the wasmtime-wasi-http crate. The preview 1 proxy adapter turns it into a component
# (the runtime tests do that with the wit-component crate).
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
wit_bindgen_version=0.60.0
if ! wit-bindgen --version 2>/dev/null | grep -q " $wit_bindgen_version"; then
  echo "installing wit-bindgen-cli $wit_bindgen_version with cargo" >&2
  cargo install --locked --quiet "wit-bindgen-cli@$wit_bindgen_version"
fi
wit_dir="$(cargo metadata --format-version 1 --manifest-path "$here/../../Cargo.toml" | python3 -c '
import json, os, sys
packages = json.load(sys.stdin)["packages"]
print(next(os.path.join(os.path.dirname(p["manifest_path"]), "wit") for p in packages if p["name"] == "wasmtime-wasi-http"))
')"
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
wit-bindgen c --world wasi:http/proxy@0.2.12 --out-dir "$gen" "$wit_dir" >/dev/null
for src in "$here"/http/*.c; do
  name="$(basename "$src" .c)"
  clang --target=wasm32-wasi -O2 -mexec-model=reactor -Wl,--strip-debug -I "$gen" \
    "$src" "$gen/proxy.c" "$gen/proxy_component_type.o" -o "$out/$name.wasm"
done
ls "$out"
