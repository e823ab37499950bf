#!/usr/bin/env bash
# Builds llama-cpp-python's OpenAI-compatible server once into the user's cache, for the
# remote-provider test against a third-party engine (test/remote-llama-cpp-python.test.ts).
# PyPI has only its sdist for Linux, so pip compiles llama.cpp (cmake, a C++ compiler;
# ~6 minutes on two cores). Generic x86-64 code (GGML_NATIVE=OFF): the cache may move
# between machines. Keep the version and folder in step with runtime/providers/llama-cpp-python.ts.
set -euo pipefail
version=0.3.36
home="${SKEIN_LLAMA_CPP_PYTHON_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/skein/llama-cpp-python-$version}"
if [ -f "$home/installed" ] && "$home/venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
  echo "llama-cpp-python $version: cached in $home"
  exit 0
fi
for tool in python3 cmake c++; do
  command -v "$tool" >/dev/null || { echo "llama-cpp-python: $tool is missing" >&2; exit 1; }
done
rm -rf "$home"
mkdir -p "$home"
python3 -m venv "$home/venv"
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_BLAS=OFF" \
  "$home/venv/bin/pip" install --no-cache-dir --quiet "llama-cpp-python[server]==$version"
"$home/venv/bin/python" -c 'import llama_cpp.server'
touch "$home/installed"
echo "llama-cpp-python $version: built in $home"
