#!/usr/bin/env bash
# End-to-end test of the real compose.yaml: Redis, the ingress and three processors in
# containers, ~500 webhooks (v1 API key and v2 signed, 20 % duplicates), one processor killed
# with SIGKILL mid-load, a Redis restart, then `stop` (every container exits 0) and `down -v`
# (nothing left behind). Then the same stack on a Redis Cluster (compose.yaml +
# compose.cluster.yaml: 3 primaries, 3 replicas, PARTITIONS=8, MIN_REPLICAS_ACK=1): load with
# duplicates, each event processed once, `processor status` over the 8 partitions, stop, down.
#
# WHAT IS SUBSTITUTED, AND WHY. The Docker engine here reaches no image registry, so nothing
# can be pulled. Only image *sources* are replaced, through tests/compose/compose.e2e.yaml,
# which sets `image`/`build` and nothing else:
#   - the runtime base `debian:bookworm-slim` -> hookstream-e2e/base:bookworm, a Debian
#     bookworm root filesystem made here with `debootstrap --variant=minbase` (plus
#     ca-certificates) and loaded with `docker import`;
#   - `redis:7-bookworm` -> hookstream-e2e/redis:bookworm, that root filesystem plus Debian's
#     redis-server package (compose.yaml's command, volume and healthcheck apply unchanged);
#   - the builder stage of ./Dockerfile (rust image + cargo-chef) -> binaries built on the
#     host with cargo (debug profile, which CI has already compiled for the tests) and copied
#     into an image that repeats the Dockerfile's runtime stage (tests/compose/Dockerfile.hookstream).
# The forward target of the load test is the simulator's sink (`simulator sink`, from the same
# image), run as one more container (not part of compose.yaml) on the compose network,
# reachable as http://fake-api:8000.
#
# Then the demo profile (`--profile demo`): the simulator as the Meeting BaaS API, its sink,
# the demo's ingress and processor; bots scheduled and results forwarded; then an outage with
# half the webhooks lost, after which everything converges (the driver's E2E_MODE=demo).
#
# CACHING. The root filesystems are kept under $HOOKSTREAM_E2E_CACHE (default
# /var/cache/hookstream-e2e) and the imported images stay in Docker, so a second run skips
# debootstrap and the imports.
#
# Run by hand from anywhere: tests/compose/e2e.sh (root, or a user in the docker group; the
# first run needs debootstrap and network access to Debian's mirror).
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${HOOKSTREAM_E2E_CACHE:-/var/cache/hookstream-e2e}
BASE_VERSION=1 # bump to rebuild the cached images
BASE_IMAGE=hookstream-e2e/base:bookworm
REDIS_IMAGE=hookstream-e2e/redis:bookworm
HOOKSTREAM_E2E_IMAGE=hookstream-e2e/hookstream:local
# A project of its own per run: two runs on one engine never tear each other down.
RUN=hookstream-e2e-$$-$RANDOM
PROJECT=$RUN
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'e2e: %s\n' "$*"; }

if docker compose version >/dev/null 2>&1; then
  COMPOSE_BIN="docker compose"
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE_BIN="docker-compose"
else
  echo "e2e: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi
COMPOSE="$COMPOSE_BIN -p $PROJECT -f compose.yaml -f tests/compose/compose.e2e.yaml"

image_current() { # image exists and carries our cache version
  [ "$(docker image inspect -f '{{index .Config.Labels "hookstream.e2e.version"}}' "$1" 2>/dev/null)" = "$BASE_VERSION" ]
}

build_base_images() {
  if image_current "$BASE_IMAGE" && image_current "$REDIS_IMAGE"; then
    log "cached base images are current"
    return
  fi
  command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y -qq debootstrap >/dev/null; }
  mkdir -p "$CACHE"
  local rootfs="$CACHE/rootfs-v$BASE_VERSION"
  if [ ! -f "$rootfs/.complete" ]; then
    log "debootstrap: Debian bookworm minbase into $rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    touch "$rootfs/.complete"
  fi
  log "importing $BASE_IMAGE"
  tar -C "$rootfs" --exclude=./.complete -c . | docker import \
    -c "LABEL hookstream.e2e.version=$BASE_VERSION" -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null

  local redisfs="$CACHE/redis-rootfs-v$BASE_VERSION"
  if [ ! -f "$redisfs/.complete" ]; then
    log "adding Debian's redis-server to a copy of the root filesystem"
    rm -rf "$redisfs"
    cp -a "$rootfs" "$redisfs"
    rm -f "$redisfs/.complete"
    cp /etc/resolv.conf "$redisfs/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$redisfs/usr/sbin/policy-rc.d" && chmod +x "$redisfs/usr/sbin/policy-rc.d"
    echo "deb $MIRROR bookworm main" >"$redisfs/etc/apt/sources.list"
    chroot "$redisfs" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null'
    rm -f "$redisfs/usr/sbin/policy-rc.d"
    rm -rf "$redisfs"/var/cache/apt/archives/*.deb "$redisfs"/var/lib/apt/lists/*
    mkdir -p "$redisfs/data"
    touch "$redisfs/.complete"
  fi
  log "importing $REDIS_IMAGE"
  tar -C "$redisfs" --exclude=./.complete -c . | docker import \
    -c "LABEL hookstream.e2e.version=$BASE_VERSION" -c 'WORKDIR /data' -c 'EXPOSE 6379' \
    -c 'CMD ["redis-server", "--protected-mode", "no"]' - "$REDIS_IMAGE" >/dev/null
}

build_binaries() {
  log "building ingress, processor, simulator and the driver (cargo, debug profile)"
  cargo build --quiet -p ingress -p processor -p simulator -p hookstream-tests --bins
  # The build context, with the binaries' debug information stripped: it is copied into the
  # engine for every build, and a CI machine's disk can be small.
  rm -rf tests/compose/.build && mkdir -p tests/compose/.build/hookstream
  cp target/debug/ingress target/debug/processor target/debug/simulator tests/compose/Dockerfile.hookstream \
    tests/compose/.build/hookstream/
  strip --strip-debug tests/compose/.build/hookstream/ingress tests/compose/.build/hookstream/processor \
    tests/compose/.build/hookstream/simulator
  docker build -q -f tests/compose/.build/hookstream/Dockerfile.hookstream -t "$HOOKSTREAM_E2E_IMAGE" \
    tests/compose/.build/hookstream >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

cleanup() {
  docker rm -f "$PROJECT-fake-api" >/dev/null 2>&1 || true
  $COMPOSE down -v --remove-orphans >/dev/null 2>&1 || true
}

# At the very end: the run's images and build contexts go too (the cached base images stay).
remove_run_images() {
  docker image rm -f "$HOOKSTREAM_E2E_IMAGE" >/dev/null 2>&1 || true
  docker builder prune -f >/dev/null 2>&1 || true
  rm -rf tests/compose/.build
}

# Starts the forward target (the simulator's sink, answering after $1 ms) on the project's network.
start_fake_api() {
  local network
  network=$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT" | head -n1)
  docker run -d --name "$PROJECT-fake-api" --network "$network" --network-alias fake-api \
    -p "127.0.0.1:$FAKE_PORT:8000" --entrypoint simulator "$HOOKSTREAM_E2E_IMAGE" \
    sink --listen 0.0.0.0:8000 --delay-ms "$1" >/dev/null
}

# `stop`: every container exits 0 (with $1 = allow-killed, one processor may have exited 137:
# the one killed on purpose); then `down -v` leaves nothing behind.
stop_and_down() {
  log "docker compose stop: every container must exit 0 within its grace period"
  $COMPOSE stop >/dev/null 2>&1
  local failed=0 killed_seen=""
  for id in $($COMPOSE ps -q); do
    name=$(docker inspect -f '{{.Name}}' "$id")
    code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
    oom=$(docker inspect -f '{{.State.OOMKilled}}' "$id")
    if [ "$code" != 0 ]; then
      if [ "$1" = allow-killed ] && [ "$code" = 137 ] && [ "$(docker inspect -f '{{.State.Running}}' "$id")" = false ] \
        && [ "$oom" = false ] && [ -n "$(docker inspect -f '{{.Config.Labels}}' "$id" | grep -o 'service:processor')" ] \
        && [ "$failed" = 0 ] && [ -z "$killed_seen" ]; then
        killed_seen=1
        log "ok: $name exited 137 (the processor killed on purpose)"
        continue
      fi
      log "FAILED: $name exited $code"
      failed=1
    else
      log "ok: $name exited 0"
    fi
  done
  [ "$failed" = 0 ] || exit 1

  log "docker compose down -v: nothing may be left behind"
  docker rm -f "$PROJECT-fake-api" >/dev/null 2>&1 || true
  $COMPOSE down -v >/dev/null 2>&1
  left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"; docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")
  if [ -n "$left" ]; then
    log "FAILED: left behind: $left"
    exit 1
  fi
}

build_base_images
build_binaries
cleanup
trap 'cleanup; remove_run_images' EXIT

# E2E_ONLY=demo runs the demo profile alone (a quicker check of the demo).
if [ "${E2E_ONLY:-}" != demo ]; then
export INGRESS_PORT; INGRESS_PORT=$(free_port)
FAKE_PORT=$(free_port)
export MEETING_BAAS_API_KEY=e2e-api-key
export WEBHOOK_SECRETS=whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD
export MEETING_BAAS_API_URL=http://fake-api:8000
export FORWARD_URL=http://fake-api:8000/forward
export CLAIM_IDLE_MS=3000 BLOCK_MS=1000 SHUTDOWN_GRACE_MS=10000 RUST_LOG=warn

log "starting the stack: redis, ingress, 3 processors"
$COMPOSE up -d --build --scale processor=3 >/dev/null 2>"$CACHE/compose-up.log" || { cat "$CACHE/compose-up.log"; exit 1; }
start_fake_api 300

# The default publishes the ingress on loopback only: no other machine can reach it, with the
# development key or any other (INGRESS_BIND is not set here, so compose.yaml's default applies).
bound=$($COMPOSE port ingress 8080 | head -n1)
if [ "${bound%:*}" != "127.0.0.1" ]; then
  log "FAILED: by default the ingress is published on $bound, reachable from other machines"
  exit 1
fi
log "ok: the ingress is published on $bound only (loopback)"

INGRESS_URL="http://127.0.0.1:$INGRESS_PORT" FAKE_URL="http://127.0.0.1:$FAKE_PORT" COMPOSE="$COMPOSE" \
  API_KEY="$MEETING_BAAS_API_KEY" SECRET="$WEBHOOK_SECRETS" target/debug/compose-e2e
stop_and_down allow-killed
log "standalone stack passed"

PROJECT=$RUN-cluster
COMPOSE="$COMPOSE_BIN -p $PROJECT -f compose.yaml -f compose.cluster.yaml -f tests/compose/compose.e2e.yaml -f tests/compose/compose.cluster.e2e.yaml"
log "starting the cluster stack: 6 Redis Cluster nodes, ingress, 2 processors"
$COMPOSE up -d --build --scale processor=2 >/dev/null 2>"$CACHE/compose-up.log" || { cat "$CACHE/compose-up.log"; exit 1; }
start_fake_api 0
INGRESS_URL="http://127.0.0.1:$INGRESS_PORT" FAKE_URL="http://127.0.0.1:$FAKE_PORT" COMPOSE="$COMPOSE" \
  API_KEY="$MEETING_BAAS_API_KEY" SECRET="$WEBHOOK_SECRETS" E2E_MODE=cluster target/debug/compose-e2e
stop_and_down no-kill
log "cluster stack passed"
fi

# The demo profile: the simulator as Meeting BaaS (quick meetings), its sink, the demo's
# ingress and processor (fast reconciler), beside the regular services.
PROJECT=$RUN-demo
COMPOSE="$COMPOSE_BIN -p $PROJECT -f compose.yaml -f tests/compose/compose.e2e.yaml --profile demo"
export SIMULATOR_PORT; SIMULATOR_PORT=$(free_port)
export SINK_PORT; SINK_PORT=$(free_port)
export DEMO_INGRESS_PORT; DEMO_INGRESS_PORT=$(free_port)
export DEMO_METRICS_PORT; DEMO_METRICS_PORT=$(free_port)
export INGRESS_PORT; INGRESS_PORT=$(free_port)
export SIM_MEETING_EVERY_SECS=2 SIM_MEETING_LEAD_SECS=20 SIM_MEETING_LENGTH_SECS=3 SIM_CALENDAR_EVERY_SECS=0
export DEMO_RECONCILE_INTERVAL_SECS=5 DEMO_RECONCILE_RESULTS_GRACE_SECS=5 DEMO_RETRY_PARK_INITIAL_MS=3000
export DEMO_BREAKER_COOLDOWN_MS=3000 DEMO_RETRY_MAX_ELAPSED_MS=3000 RUST_LOG=info
log "starting the demo profile: redis, ingress, processor, simulator, sink, demo-ingress, demo-processor"
$COMPOSE up -d --build >/dev/null 2>"$CACHE/compose-up.log" || { cat "$CACHE/compose-up.log"; exit 1; }
INGRESS_URL="http://127.0.0.1:$DEMO_INGRESS_PORT" FAKE_URL="http://127.0.0.1:$SINK_PORT" \
  SIM_URL="http://127.0.0.1:$SIMULATOR_PORT" COMPOSE="$COMPOSE" API_KEY=demo-api-key SECRET=unused \
  E2E_MODE=demo target/debug/compose-e2e || { $COMPOSE logs --tail 60 demo-processor simulator >&2; exit 1; }
stop_and_down no-kill
trap - EXIT
remove_run_images
log "passed"
