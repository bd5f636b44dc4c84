#!/usr/bin/env bash
# The main job, end to end on this machine: a real engine, a real registry, a sample service, the daemon.
# It starts the lab, runs a sample container from 127.0.0.1:5000, starts `dockwarden run`, pushes a new
# image to the watched tag and shows the daemon upgrading the container, then pushes a broken image and
# shows it rolled back; then status, a rollback on demand, the history and a GC dry run. Everything it
# creates is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/lab.sh up
scripts/bootstrap.sh

REPO=127.0.0.1:5000/dockwarden-demo/sample
NAME=dockwarden-demo-web
WORK=$(mktemp -d /tmp/dockwarden-demo.XXXXXX)
DOCKER=/usr/bin/docker
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DAEMON_PID=

cleanup() {
    [[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
    for c in "$NAME" "$NAME--dockwarden-old" "$NAME--dockwarden-done"; do $DOCKER rm -f "$c" >/dev/null 2>&1 || true; done
    for _ in 1 2 3; do
        ids=$($DOCKER images -aq --filter label=dockwarden.demo=1)
        [[ -z $ids ]] && break
        $DOCKER rmi -f $ids >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# $1: the version written into the page the sample serves; $2: its CMD (default: serve, stop on SIGTERM)
build_and_push() {
    local cmd=${2:-'["sh", "-c", "trap \"exit 0\" TERM; httpd -f -p 8080 -h /www & wait"]'}
    mkdir -p "$WORK/ctx/rootfs/bin" "$WORK/ctx/rootfs/www"
    cp /bin/busybox "$WORK/ctx/rootfs/bin/busybox"
    for applet in sh httpd wget sleep false; do ln -sf busybox "$WORK/ctx/rootfs/bin/$applet"; done
    echo "sample version $1" >"$WORK/ctx/rootfs/www/index.html"
    cat >"$WORK/ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
LABEL dockwarden.demo=1
CMD $cmd
DOCKERFILE
    $DOCKER build -q -t "$REPO:latest" "$WORK/ctx" >/dev/null
    $DOCKER push "$REPO:latest" | tail -1
}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

serving() { echo "127.0.0.1:$PORT says: $(curl -s --retry 20 --retry-connrefused --retry-delay 0 -m 2 "http://127.0.0.1:$PORT/")"; }

wait_for() {  # $1: text in the daemon's log, $2: seconds
    for _ in $(seq $(($2 * 5))); do
        grep -qF "$1" "$WORK/daemon.log" && return 0
        sleep 0.2
    done
    echo "demo: gave up waiting for $1; the daemon's log:" >&2
    tail -n 30 "$WORK/daemon.log" >&2
    exit 1
}

events() {  # the daemon's log events whose name starts with any of the arguments, one short line each
    python3 - "$WORK/daemon.log" "$@" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event", "").startswith(tuple(sys.argv[2:])):
        extra = {k: e[k] for k in ("step", "duration_ms", "result", "error", "verdict") if k in e}
        print(f"  {e['event']:<18} {json.dumps(extra)}")
PY
}

step "1. Build sample v1, push it to the local registry, run it as container '$NAME' on 127.0.0.1:$PORT"
$DOCKER rm -f "$NAME" >/dev/null 2>&1 || true
build_and_push 1
$DOCKER run -d --name "$NAME" --label dockwarden.demo=1 -p "127.0.0.1:$PORT:8080" -e GREETING=kept \
    "$REPO:latest" >/dev/null
serving

cat >"$WORK/dockwarden.yaml" <<YAML
interval: 10s
state_dir: $WORK/state
stability_window: 3s
services:
  web:
    container: $NAME
    update: auto
    health: {http: "http://127.0.0.1:$PORT/", timeout: 10s}
YAML
step "2. Validate the config"
.venv/bin/dockwarden validate -c "$WORK/dockwarden.yaml"

step "3. One check now: the service is up to date (one HEAD to the registry, no GET)"
.venv/bin/dockwarden check -c "$WORK/dockwarden.yaml" 2>/dev/null

step "4. Start the daemon (its JSON log is in $WORK/daemon.log), then push sample v2 to the same tag"
.venv/bin/dockwarden run -c "$WORK/dockwarden.yaml" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
wait_for '"event": "cycle.finished"' 20
build_and_push 2

step "5. The daemon's next cycle upgrades the container: pull by digest, recreate, gate, commit"
wait_for '"event": "upgrade.finished"' 40
events upgrade.
serving
echo "the user's setting survived: $($DOCKER inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$NAME" | grep GREETING)"

step "6. Push a broken v3 (it exits at once): the gate fails and the old container is put back"
build_and_push 3 '["false"]'
wait_for '"event": "rollback.finished"' 40
events rollback. upgrade.failed
serving

step "7. v3 is now on the skip list: a manual update does not retry it (exit 0, result skipped)"
.venv/bin/dockwarden update -c "$WORK/dockwarden.yaml" 2>/dev/null || true
kill "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=

step "8. Status: the running digest, the registry's (v3, from the last check), v1 retained, v3 skipped"
.venv/bin/dockwarden status -c "$WORK/dockwarden.yaml"

step "9. Roll back on demand to v1, the retained version (no pull; gated like an upgrade)"
.venv/bin/dockwarden rollback -c "$WORK/dockwarden.yaml" web 2>/dev/null
serving
echo "retained now (v2, rolled away from, is kept for rolling forward):"
$DOCKER images --format '  {{.Repository}}:{{.Tag}}' "$REPO" | grep ':dockwarden-' || true

step "10. The history of every decision, newest first"
.venv/bin/dockwarden history -c "$WORK/dockwarden.yaml" --limit 12

step "11. What garbage collection would remove on this host (a dry run: nothing is removed)"
.venv/bin/dockwarden gc -c "$WORK/dockwarden.yaml" --dry-run 2>/dev/null || true
step "Done: v2 kept serving through the broken push, v1 came back on demand; nothing is left behind"
