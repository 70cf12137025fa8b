#!/usr/bin/env bash
# Starts llama-server (built from the PyPI sdist by scripts/build-llama-cpp.sh, cached) on
# 127.0.0.1 serving a local GGUF as an OpenAI- and Anthropic-compatible optimizer, waits until
# it answers /health, and prints its base URL (http://127.0.0.1:PORT) on stdout.
#
#   scripts/llama-server.sh start  [PORT]    (default 18080; model: gemma3-270m)
#   scripts/llama-server.sh stop   [PORT]
#   scripts/llama-server.sh status [PORT]    (exit 0 when healthy)
#
# Idempotent: a server already healthy on PORT is reused. Its log and pid file live in
# $PROMPTLOOP_CACHE/server-PORT.{log,pid}. Environment: PROMPTLOOP_SERVER_MODEL (a GGUF path),
# PROMPTLOOP_SERVER_TEMPLATE (a built-in template name, or `model`), PROMPTLOOP_SERVER_CTX,
# PROMPTLOOP_SERVER_THREADS, PROMPTLOOP_SERVER_ALIAS (default `optimizer`), PROMPTLOOP_SERVER_ARGS
# (more flags, e.g. --metrics).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${PROMPTLOOP_CACHE:-$HOME/.cache/promptloop}"
MODELS="${PROMPTLOOP_MODELS:-$CACHE/models}"
cmd="${1:-start}"
PORT="${2:-18080}"
PIDFILE="$CACHE/server-$PORT.pid"
LOG="$CACHE/server-$PORT.log"
URL="http://127.0.0.1:$PORT"

healthy() { python3 - "$URL/health" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

case "$cmd" in
status)
    if healthy; then exit 0; else exit 1; fi ;;
stop)
    if [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; rm -f "$PIDFILE"; fi
    exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop|status [PORT]" >&2; exit 2 ;;
esac

if healthy; then echo "$URL"; exit 0; fi
BIN="$(scripts/build-llama-cpp.sh llama-server)/llama-server"
MODEL="${PROMPTLOOP_SERVER_MODEL:-$MODELS/gemma-3-270m-q4_k_m.gguf}"
[ -f "$MODEL" ] || { echo "$MODEL missing: run scripts/setup.sh" >&2; exit 1; }
mkdir -p "$CACHE"
# One slot, 8k context, 2 threads: the optimizer of the tests; gemma template (the GGUF carries
# none). PROMPTLOOP_SERVER_TEMPLATE=model uses the GGUF's own template (llama.cpp's built-in
# detection, as the in-process engine does); _CTX and _THREADS override the others.
TEMPLATE="${PROMPTLOOP_SERVER_TEMPLATE:-gemma}"
TEMPLATE_ARGS=(--chat-template "$TEMPLATE")
[ "$TEMPLATE" = model ] && TEMPLATE_ARGS=()
nohup "$BIN" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -c "${PROMPTLOOP_SERVER_CTX:-8192}" -np 1 \
    -t "${PROMPTLOOP_SERVER_THREADS:-2}" --no-jinja "${TEMPLATE_ARGS[@]}" \
    --alias "${PROMPTLOOP_SERVER_ALIAS:-optimizer}" --no-webui ${PROMPTLOOP_SERVER_ARGS:-} >"$LOG" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 1 120); do
    if healthy; then echo "$URL"; exit 0; fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        echo "llama-server exited; its log ($LOG) ends:" >&2; tail -20 "$LOG" >&2; exit 1
    fi
    sleep 0.5
done
echo "llama-server did not become healthy within 60 s; see $LOG" >&2
exit 1
