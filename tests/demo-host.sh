#!/usr/bin/env bash
# Smoke test of the demo without Docker (scripts/demo), run by .ci/run: the host command the
# README gives starts Redis, the ingress, the processor, the simulator and the sink; within two
# minutes bots are scheduled and a result reaches the sink; SIGTERM stops every process.
# Uses the debug binaries the test suite built (DEMO_BIN=target/debug, no build).
set -euo pipefail
cd "$(dirname "$0")/.."

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export DEMO_INGRESS_PORT=$(free_port) DEMO_METRICS_PORT=$(free_port) DEMO_SIMULATOR_PORT=$(free_port)
export DEMO_SINK_PORT=$(free_port) DEMO_REDIS_PORT=$(free_port)
export DEMO_NO_BUILD=1 DEMO_BIN=${DEMO_BIN:-target/debug}
export SIM_MEETING_EVERY_SECS=2 SIM_MEETING_LEAD_SECS=6 SIM_MEETING_LENGTH_SECS=2 SIM_CANCEL_SHARE=0
cargo build --quiet -p ingress -p processor -p simulator
LOG=$(mktemp)
setsid scripts/demo >"$LOG" 2>&1 &
DEMO=$!
fail() { echo "demo-host: FAILED: $*" >&2; tail -40 "$LOG" >&2; kill -TERM -- -"$DEMO" 2>/dev/null || true; exit 1; }

deadline=$((SECONDS + 120))
until grep -q 'sink: POST /results event=bot.completed\|sink: POST /results event=complete' "$LOG"; do
  [ $SECONDS -lt $deadline ] || fail "no result reached the sink within 120 s"
  kill -0 "$DEMO" 2>/dev/null || fail "scripts/demo exited early"
  sleep 1
done
state=$(curl -sf "http://127.0.0.1:$DEMO_SIMULATOR_PORT/_sim/state") || fail "the simulator does not answer"
scheduled=$(printf '%s' "$state" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bots_scheduled_total"])')
[ "$scheduled" -ge 1 ] || fail "no bot scheduled: $state"
echo "demo-host: ok: $scheduled bots scheduled, a result forwarded to the sink"

kill -TERM "$DEMO"
deadline=$((SECONDS + 30))
while kill -0 "$DEMO" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || fail "scripts/demo did not stop on SIGTERM"
  sleep 0.2
done
# Nothing of it is left running (its processes are in its own session; a zombie, exited and
# not yet reaped by this machine's init, is not running).
deadline=$((SECONDS + 10))
while left=$(ps -e -o pid=,sid=,stat=,cmd= | awk -v s="$DEMO" '$2 == s && $3 !~ /^Z/') && [ -n "$left" ]; do
  [ $SECONDS -lt $deadline ] || fail "left running after SIGTERM: $left"
  sleep 0.2
done
echo "demo-host: ok: SIGTERM stopped every process"
rm -f "$LOG"
