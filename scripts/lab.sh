#!/usr/bin/env bash
# The lab: a real Docker Engine and a CNCF distribution registry on 127.0.0.1, for the demo,
# the tests, the benchmarks and CI. Idempotent: every step first checks whether it is already done.
# Beside Debian 12's Engine 20.10 (API 1.41) it runs Debian 13's Engine 26.1 (API 1.45) for compatibility
# tests, with its own socket, data root, exec root, pidfile and bridge, and Debian forky/sid's Engine 28.5 with
# the containerd image store (what Docker 29 makes the default) and Docker 29's API floor (1.44), set up the
# same way. It also installs Docker Compose v2 from Debian forky/sid as a CLI plugin, for the compose tests.
# All come unpacked from newer Debian suites into private folders, through the mirror this machine's own apt
# sources name.
#   scripts/lab.sh up      install what is missing, start dockerd and the registry (default)
#   scripts/lab.sh status  say what answers
#   scripts/lab.sh down    stop what `up` started
set -euo pipefail

LAB_DIR=${DWLAB_DIR:-/var/lib/dwlab}
LOG_DIR=${DWLAB_LOG_DIR:-/var/log/dwlab}
REGISTRY_ADDR=${DWLAB_REGISTRY:-127.0.0.1:5000}
DOCKER_SOCK=/var/run/docker.sock
# chromium and its driver: the status page's test drives a headless browser (selenium).
PACKAGES=(docker.io docker-registry busybox-static apache2-utils iproute2 curl chromium chromium-driver)
ENGINE26_DIR=${DWLAB_ENGINE26_DIR:-/opt/dwlab/engine26}
ENGINE26_SOCK=/var/run/dwlab-docker26.sock
ENGINE26_BRIDGE=dwbr26
# The second engine's bridge; nothing is ever sent to it except through ports published on 127.0.0.1.
ENGINE26_BRIDGE_ADDR=172.30.0.1/24
ENGINE28_DIR=${DWLAB_ENGINE28_DIR:-/opt/dwlab/engine28}
ENGINE28_SOCK=/var/run/dwlab-docker28.sock
ENGINE28_BRIDGE=dwbr28
ENGINE28_BRIDGE_ADDR=172.31.0.1/24
COMPOSE_DIR=${DWLAB_COMPOSE_DIR:-/opt/dwlab/compose}
# Debian's prometheus package, unpacked (not installed: its postinst would start a Prometheus server), for
# `promtool check metrics` in the metrics test.
PROMETHEUS_DIR=${DWLAB_PROMETHEUS_DIR:-/opt/dwlab/prometheus}
# Debian 12's nginx, unpacked for the start-first proxy test and benchmark, which copy its binary and the
# host's copies of its libraries into a FROM-scratch image (tests/support/nginx.py); never installed.
NGINX_DIR=${DWLAB_NGINX_DIR:-/opt/dwlab/nginx}
# A system plugin folder that both Docker CLIs (Debian's 20.10 and 28) search whatever DOCKER_CONFIG says, so
# tests that point DOCKER_CONFIG at their own credentials still find `docker compose`.
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose

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
    # Debian 13's runc needs a newer glibc; the second engine uses this one.
    command -v runc >/dev/null || missing+=(runc)
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

# The mirror this machine's apt sources use for its own Debian release: newer suites come from the same place
# (a machine behind a local mirror or proxy must not be sent elsewhere).
debian_mirror() {
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    apt-get indextargets --no-release-info --format '$(RELEASE) $(REPO_URI)' "Target-Of: deb" 2>/dev/null |
        awk -v want="$codename" '
            $1 == want { print $2; found = 1; exit }
            !first && $1 !~ /-/ { first = $2 }
            END { if (!found && first) print first }'
}

# fetch_debian DEST "SUITE..." PACKAGE...: download PACKAGEs from other Debian suites through this machine's
# mirror and unpack them into DEST, which appears only once complete. Nothing is installed system-wide.
fetch_debian() {
    local dest=$1 suites=$2
    shift 2
    local mirror apt_dir
    mirror=$(debian_mirror)
    if [[ -z $mirror ]]; then
        say "no Debian mirror found in this machine's apt sources (apt-get indextargets)"
        return 1
    fi
    apt_dir=$(mktemp -d)
    mkdir -p "$apt_dir"/{etc,lists/partial,cache/archives/partial}
    cat >"$apt_dir/etc/newer.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suites
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/etc"
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" update -qq
    (cd "$apt_dir" && apt-get "${opts[@]}" download "$@" >/dev/null)
    rm -rf "$dest.tmp"
    mkdir -p "$dest.tmp"
    for deb in "$apt_dir"/*.deb; do dpkg -x "$deb" "$dest.tmp"; done
    rm -rf "$apt_dir" "$dest"
    mv "$dest.tmp" "$dest"
}

install_engine26() {
    [[ -x $ENGINE26_DIR/usr/sbin/dockerd ]] && return 0
    say "fetching Debian 13's docker.io 26.1 into $ENGINE26_DIR (not installed system-wide)"
    fetch_debian "$ENGINE26_DIR" trixie docker.io containerd tini
}

install_nginx() {
    [[ -x $NGINX_DIR/usr/sbin/nginx ]] && return 0
    say "fetching Debian 12's nginx into $NGINX_DIR (not installed system-wide)"
    fetch_debian "$NGINX_DIR" bookworm nginx
}

# Compose v2 from forky (testing) or sid, whichever has the newer (2.40.3 when this was written): Debian 12
# has only Compose v1. Its binary needs nothing but glibc >= 2.34, so it runs here; the plugin folder gets a
# link to it.
install_compose() {
    local binary=$COMPOSE_DIR/usr/libexec/docker/cli-plugins/docker-compose
    if [[ ! -x $binary ]]; then
        say "fetching Debian forky/sid's docker-compose (v2) into $COMPOSE_DIR (not installed system-wide)"
        fetch_debian "$COMPOSE_DIR" "forky sid" docker-compose
    fi
    if [[ $(readlink "$COMPOSE_PLUGIN" 2>/dev/null) != "$binary" ]]; then
        mkdir -p "$(dirname "$COMPOSE_PLUGIN")"
        ln -sfn "$binary" "$COMPOSE_PLUGIN"
    fi
}

install_promtool() {
    [[ -x $PROMETHEUS_DIR/usr/bin/promtool ]] && return 0
    say "fetching Debian's prometheus package for promtool into $PROMETHEUS_DIR (not installed system-wide)"
    fetch_debian "$PROMETHEUS_DIR" "$(. /etc/os-release && echo "$VERSION_CODENAME")" prometheus
}

compose_answers() {
    docker compose version >/dev/null 2>&1
}

engine26_answers() {
    curl -fsS --max-time 3 --unix-socket "$ENGINE26_SOCK" http://engine/_ping >/dev/null 2>&1
}

start_engine26() {
    if engine26_answers; then return 0; fi
    say "starting dockerd 26.1 on $ENGINE26_SOCK"
    if ! ip link show "$ENGINE26_BRIDGE" >/dev/null 2>&1; then
        ip link add "$ENGINE26_BRIDGE" type bridge
        ip addr add "$ENGINE26_BRIDGE_ADDR" dev "$ENGINE26_BRIDGE"
    fi
    ip link set "$ENGINE26_BRIDGE" up
    rm -f /var/run/dwlab-docker26.pid
    # Its own containerd comes from the same tree; runc stays Debian 12's (Debian 13's needs glibc 2.38).
    PATH="$ENGINE26_DIR/usr/bin:$ENGINE26_DIR/usr/sbin:$PATH" setsid nohup "$ENGINE26_DIR/usr/sbin/dockerd" \
        --host "unix://$ENGINE26_SOCK" --data-root "$LAB_DIR/engine26/data" \
        --exec-root /var/run/dwlab-docker26 --pidfile /var/run/dwlab-docker26.pid \
        --bridge "$ENGINE26_BRIDGE" --iptables=false --ip-masq=false \
        >>"$LOG_DIR/dockerd26.log" 2>&1 </dev/null &
    wait_for "dockerd 26.1" engine26_answers 60
}

install_engine28() {
    [[ -x $ENGINE28_DIR/usr/sbin/dockerd ]] && return 0
    say "fetching Debian forky/sid's docker.io 28.5 and containerd 2.1 into $ENGINE28_DIR (not installed system-wide)"
    fetch_debian "$ENGINE28_DIR" "forky sid" docker.io containerd tini
}

engine28_answers() {
    curl -fsS --max-time 3 --unix-socket "$ENGINE28_SOCK" http://engine/_ping >/dev/null 2>&1
}

# Engine 28.5 with the containerd image store, as Docker 29 runs by default: images are containerd's (an
# image's ID is its manifest or index digest). DOCKER_MIN_API_VERSION=1.44 is Docker 29's API floor, so a
# client that cannot negotiate 1.44 fails here as it would there. Its managed containerd lives under its own
# exec root (socket, state) and data root (content, snapshots), so it shares nothing with the other engines'.
start_engine28() {
    if engine28_answers; then return 0; fi
    say "starting dockerd 28.5 (containerd image store) on $ENGINE28_SOCK"
    if ! ip link show "$ENGINE28_BRIDGE" >/dev/null 2>&1; then
        ip link add "$ENGINE28_BRIDGE" type bridge
        ip addr add "$ENGINE28_BRIDGE_ADDR" dev "$ENGINE28_BRIDGE"
    fi
    ip link set "$ENGINE28_BRIDGE" up
    mkdir -p "$LAB_DIR/engine28"
    cat >"$LAB_DIR/engine28/daemon.json" <<JSON
{"features": {"containerd-snapshotter": true}}
JSON
    rm -f /var/run/dwlab-docker28.pid
    # runc stays Debian 12's (forky's needs glibc 2.38); containerd and its shim come from the same tree.
    PATH="$ENGINE28_DIR/usr/bin:$ENGINE28_DIR/usr/sbin:$PATH" DOCKER_MIN_API_VERSION=1.44 setsid nohup \
        "$ENGINE28_DIR/usr/sbin/dockerd" \
        --host "unix://$ENGINE28_SOCK" --config-file "$LAB_DIR/engine28/daemon.json" \
        --data-root "$LAB_DIR/engine28/data" \
        --exec-root /var/run/dwlab-docker28 --pidfile /var/run/dwlab-docker28.pid \
        --bridge "$ENGINE28_BRIDGE" --iptables=false --ip-masq=false \
        >>"$LOG_DIR/dockerd28.log" 2>&1 </dev/null &
    wait_for "dockerd 28.5" engine28_answers 60
}

status() {
    engine_answers && say "engine: up ($DOCKER_SOCK)" || say "engine: down"
    engine26_answers && say "engine 26.1: up ($ENGINE26_SOCK)" || say "engine 26.1: down"
    engine28_answers && say "engine 28.5 (containerd store): up ($ENGINE28_SOCK)" || say "engine 28.5: down"
    registry_answers && say "registry: up ($REGISTRY_ADDR)" || say "registry: down"
    compose_answers && say "compose: $(docker compose version --short 2>/dev/null) ($COMPOSE_PLUGIN)" ||
        say "compose: missing"
    [[ -x $PROMETHEUS_DIR/usr/bin/promtool ]] && say "promtool: $PROMETHEUS_DIR/usr/bin/promtool" ||
        say "promtool: missing"
}

down() {
    if [[ -f $LAB_DIR/registry.pid ]]; then
        kill "$(cat "$LAB_DIR/registry.pid")" 2>/dev/null || true
        rm -f "$LAB_DIR/registry.pid"
    fi
    # The engines this script started: by pidfile, and by command line (an engine stopped and started in
    # quick succession can lose its pidfile to the old one's exit).
    local pids=()
    pids+=($(cat /var/run/docker.pid /var/run/dwlab-docker26.pid /var/run/dwlab-docker28.pid 2>/dev/null || true))
    pids+=($(pgrep -f "^/usr/sbin/dockerd --host unix://$DOCKER_SOCK\$" || true))
    pids+=($(pgrep -f "^$ENGINE26_DIR/usr/sbin/dockerd " || true))
    pids+=($(pgrep -f "^$ENGINE28_DIR/usr/sbin/dockerd " || true))
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    # Wait until the engines and their managed containerd are gone: a containerd still shutting down holds
    # its metadata database, and an `up` right after would time out waiting for the new one.
    pids+=($(pgrep -f 'containerd --config /var/run/(docker|dwlab-docker26|dwlab-docker28)/containerd/' || true))
    for _ in $(seq 150); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && return 0
        sleep 0.2
    done
    say "some engine processes did not exit within 30s: ${pids[*]}"
}

main() {
    case ${1:-up} in
    up)
        need_root
        mkdir -p "$LAB_DIR" "$LOG_DIR"
        install_missing
        start_engine
        start_registry
        install_engine26
        start_engine26
        install_engine28
        start_engine28
        install_compose
        install_promtool
        install_nginx
        status
        ;;
    status) status ;;
    down) need_root; down ;;
    *) say "usage: $0 [up|status|down]"; exit 2 ;;
    esac
}

main "$@"
