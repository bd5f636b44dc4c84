#!/usr/bin/env bash
# The main job, end to end on this machine: a real engine, a real registry, a sample service, the daemon.
# It starts the lab, runs a sample container from 127.0.0.1:5000, starts `dockwarden run`, pushes a new
# image to the watched tag, and shows the daemon reporting it. Everything it creates is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/lab.sh up
scripts/bootstrap.sh

REPO=127.0.0.1:5000/dockwarden-demo/sample
NAME=dockwarden-demo-web
WORK=$(mktemp -d /tmp/dockwarden-demo.XXXXXX)
DOCKER=/usr/bin/docker
DAEMON_PID=

cleanup() {
    [[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
    $DOCKER rm -f "$NAME" >/dev/null 2>&1 || true
    for _ in 1 2 3; do
        ids=$($DOCKER images -aq --filter label=dockwarden.demo=1)
        [[ -z $ids ]] && break
        $DOCKER rmi -f $ids >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

build_and_push() {  # $1: the version written into the page the sample serves
    mkdir -p "$WORK/ctx/rootfs/bin" "$WORK/ctx/rootfs/www"
    cp /bin/busybox "$WORK/ctx/rootfs/bin/busybox"
    for applet in sh httpd wget sleep; do ln -sf busybox "$WORK/ctx/rootfs/bin/$applet"; done
    echo "sample version $1" >"$WORK/ctx/rootfs/www/index.html"
    cat >"$WORK/ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
LABEL dockwarden.demo=1
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
DOCKERFILE
    $DOCKER build -q -t "$REPO:latest" "$WORK/ctx" >/dev/null
    $DOCKER push "$REPO:latest" | tail -1
}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Build sample v1, push it to the local registry, run it as container '$NAME'"
$DOCKER rm -f "$NAME" >/dev/null 2>&1 || true
build_and_push 1
$DOCKER run -d --name "$NAME" --label dockwarden.demo=1 "$REPO:latest" >/dev/null

cat >"$WORK/dockwarden.yaml" <<YAML
interval: 10s
state_dir: $WORK/state
services:
  web:
    container: $NAME
    update: monitor
YAML
step "2. Validate the config"
.venv/bin/dockwarden validate -c "$WORK/dockwarden.yaml"

step "3. One check now: the service is up to date (one HEAD to the registry, no GET)"
.venv/bin/dockwarden check -c "$WORK/dockwarden.yaml" 2>/dev/null

step "4. Start the daemon (JSON log lines below), then push sample v2 to the same tag"
.venv/bin/dockwarden run -c "$WORK/dockwarden.yaml" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
tail -n +1 -f "$WORK/daemon.log" --pid "$DAEMON_PID" &
TAIL_PID=$!
for _ in $(seq 100); do grep -qF '"event": "cycle.finished"' "$WORK/daemon.log" && break; sleep 0.2; done
build_and_push 2

step "5. Waiting for the daemon's next cycle to notice (at most 10 s)"
found=
for _ in $(seq 150); do
    if grep -qF '"event": "update.available"' "$WORK/daemon.log"; then found=1; break; fi
    sleep 0.2
done
kill "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=
kill "$TAIL_PID" 2>/dev/null || true
if [[ -z $found ]]; then
    echo "demo: the daemon did not report the update; its log is above" >&2
    exit 1
fi
step "Result: the daemon reported the new image"
grep -F '"event": "update.available"' "$WORK/daemon.log" | head -1
step "And 'dockwarden check' agrees"
.venv/bin/dockwarden check -c "$WORK/dockwarden.yaml" 2>/dev/null || true
