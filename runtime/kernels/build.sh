#!/bin/sh
# Rebuilds matmul.wasm from matmul.c with Debian's clang/lld (apt-get install clang lld).
# Freestanding wasm32 + SIMD128: no libc, memory imported from JavaScript (kernels.ts owns
# it), only the exported kernels kept. clang's version goes into matmul.wasm.clang so that
# the CI check compares byte for byte only against the same compiler.
set -eu
cd "$(dirname "$0")"
CLANG="${CLANG:-clang}"
"$CLANG" --target=wasm32 -msimd128 -O3 -nostdlib -ffreestanding -fno-builtin \
  -Wall -Wextra -Werror \
  -Wl,--no-entry -Wl,--import-memory -Wl,--export=__heap_base -Wl,--strip-all \
  -o matmul.wasm matmul.c
"$CLANG" --version | head -1 > matmul.wasm.clang
