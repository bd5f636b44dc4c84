#!/usr/bin/env bash
# The lab: a real Docker Engine and a CNCF distribution registry on 127.0.0.1, for the demo,
# the tests, the benchmarks and CI. Idempotent: every step first checks whether it is already done.
#   scripts/lab.sh up      install what is missing, start dockerd and the registry (default)
#   scripts/lab.sh status  say what answers
#   scripts/lab.sh down    stop what `up` started
set -euo pipefail

LAB_DIR=${DWLAB_DIR:-/var/lib/dwlab}
LOG_DIR=${DWLAB_LOG_DIR:-/var/log/dwlab}
REGISTRY_ADDR=${DWLAB_REGISTRY:-127.0.0.1:5000}
DOCKER_SOCK=/var/run/docker.sock
PACKAGES=(docker.io docker-registry busybox-static apache2-utils)

say() { printf 'lab: %s\n' "$*" >&2; }

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        say "must run as root (it installs packages and starts dockerd)"
        exit 1
    fi
}

install_missing() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

engine_answers() {
    curl -fsS --max-time 3 --unix-socket "$DOCKER_SOCK" http://engine/_ping >/dev/null 2>&1
}

registry_answers() {
    curl -fsS --max-time 3 "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1
}

wait_for() {
    local what=$1 check=$2 seconds=$3
    for ((i = 0; i < seconds * 5; i++)); do
        "$check" && return 0
        sleep 0.2
    done
    say "$what did not answer within ${seconds}s; see $LOG_DIR"
    return 1
}

start_engine() {
    if engine_answers; then return 0; fi
    say "starting dockerd"
    # A stale pidfile from a killed dockerd makes the next one refuse to start.
    rm -f /var/run/docker.pid
    setsid nohup /usr/sbin/dockerd --host "unix://$DOCKER_SOCK" >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
    wait_for dockerd engine_answers 60
}

start_registry() {
    if registry_answers; then return 0; fi
    say "starting the registry on $REGISTRY_ADDR"
    mkdir -p "$LAB_DIR/registry"
    cat >"$LAB_DIR/registry.yml" <<YAML
version: 0.1
log:
  accesslog:
    disabled: false
  level: info
storage:
  filesystem:
    rootdirectory: $LAB_DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
YAML
    setsid nohup /usr/bin/docker-registry serve "$LAB_DIR/registry.yml" >>"$LOG_DIR/registry.log" 2>&1 </dev/null &
    echo $! >"$LAB_DIR/registry.pid"
    wait_for registry registry_answers 30
}

status() {
    engine_answers && say "engine: up ($DOCKER_SOCK)" || say "engine: down"
    registry_answers && say "registry: up ($REGISTRY_ADDR)" || say "registry: down"
}

down() {
    if [[ -f $LAB_DIR/registry.pid ]]; then
        kill "$(cat "$LAB_DIR/registry.pid")" 2>/dev/null || true
        rm -f "$LAB_DIR/registry.pid"
    fi
    if [[ -f /var/run/docker.pid ]]; then
        kill "$(cat /var/run/docker.pid)" 2>/dev/null || true
    fi
}

main() {
    case ${1:-up} in
    up)
        need_root
        mkdir -p "$LAB_DIR" "$LOG_DIR"
        install_missing
        start_engine
        start_registry
        status
        ;;
    status) status ;;
    down) need_root; down ;;
    *) say "usage: $0 [up|status|down]"; exit 2 ;;
    esac
}

main "$@"
