#!/bin/sh
# Rebuilds matmul.wasm from matmul.c with Debian's clang/lld (apt-get install clang lld),
# and matmul-relaxed.wasm from the same source with relaxed SIMD, which needs clang ≥ 16
# (apt-get install clang-19 lld-19; matmul.ts uses it where the engine runs relaxed SIMD).
# Freestanding wasm32 + SIMD128: no libc, memory imported from JavaScript (matmul.ts owns
# it), only the exported kernels kept. The memory is shared (atomics, bulk memory) so that
# a second thread (kernel-thread.mjs) runs its own instance of the same code on it; each
# instance gets its own stack through the exported __stack_pointer (mutable globals). Each
# compiler's version goes into the .clang file beside its build so that the CI check
# compares byte for byte only against the same compiler.
set -eu
cd "$(dirname "$0")"
CLANG="${CLANG:-clang}"
CLANG_RELAXED="${CLANG_RELAXED:-clang-19}"
build() {
  "$1" --target=wasm32 -msimd128 $2 -matomics -mbulk-memory -mmutable-globals -O3 \
    -nostdlib -ffreestanding -fno-builtin -Wall -Wextra -Werror \
    -Wl,--no-entry -Wl,--import-memory -Wl,--shared-memory -Wl,--max-memory=4294967296 \
    -Wl,--export=__heap_base -Wl,--export=__stack_pointer -Wl,--strip-all \
    -o "$3" matmul.c
  "$1" --version | head -1 > "$3.clang"
}
build "$CLANG" "" matmul.wasm
if command -v "$CLANG_RELAXED" >/dev/null 2>&1; then
  build "$CLANG_RELAXED" -mrelaxed-simd matmul-relaxed.wasm
else
  echo "build.sh: $CLANG_RELAXED not found, matmul-relaxed.wasm left as it is" >&2
fi
