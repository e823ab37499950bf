#!/bin/sh
# Rebuilds matmul.wasm from matmul.c with Debian's clang/lld (apt-get install clang lld).
# Freestanding wasm32 + SIMD128: no libc, memory imported from JavaScript (matmul.ts owns
# it), only the exported kernels kept. The memory is shared (atomics, bulk memory) so that
# a second thread (kernel-thread.mjs) runs its own instance of the same code on it; each
# instance gets its own stack through the exported __stack_pointer (mutable globals). clang's version goes into matmul.wasm.clang so that
# the CI check compares byte for byte only against the same compiler.
set -eu
cd "$(dirname "$0")"
CLANG="${CLANG:-clang}"
"$CLANG" --target=wasm32 -msimd128 -matomics -mbulk-memory -mmutable-globals -O3 \
  -nostdlib -ffreestanding -fno-builtin -Wall -Wextra -Werror \
  -Wl,--no-entry -Wl,--import-memory -Wl,--shared-memory -Wl,--max-memory=4294967296 \
  -Wl,--export=__heap_base -Wl,--export=__stack_pointer -Wl,--strip-all \
  -o matmul.wasm matmul.c
"$CLANG" --version | head -1 > matmul.wasm.clang
