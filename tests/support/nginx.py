"""A real reverse proxy for start-first tests and benchmarks: Debian 12's nginx in a FROM-scratch image.

`scripts/lab.sh up` unpacks the nginx package into NGINX_DIR (never installed); `build_nginx` copies its
binary, the host's copies of the libraries `ldd` names, and a config into a FROM-scratch image. The proxy
re-resolves the backend through Docker's embedded DNS every second and retries a failed or slow connect
on the next address, as a proxy in front of start-first services should. Also: a client looping inside a
network without a proxy (`NetworkClient`), and one on the host counting failures (`HostClient`).
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import docker

from tests.support.images import LABEL

NGINX_DIR = Path(os.environ.get("DWLAB_NGINX_DIR", "/opt/dwlab/nginx"))
NGINX = NGINX_DIR / "usr/sbin/nginx"
# Docker's embedded DNS (user-defined networks); `valid=1s` makes nginx resolve the backend again each
# second, `proxy_next_upstream` tries the next address on a refused, reset or slow (250 ms) connect.
CONFIG = """\
user nobody nogroup;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr warn;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    resolver 127.0.0.11 valid=1s ipv6=off;
    resolver_timeout 1s;
    server {
        listen 8080;
        location / {
            set $backend BACKEND;
            proxy_pass http://$backend:8080;
            proxy_connect_timeout 250ms;
            proxy_read_timeout 5s;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 4;
        }
    }
}
"""


def _libraries(binary: Path) -> list[Path]:
    """The shared objects `binary` loads, as the host's dynamic loader resolves them (`ldd`)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            found.append(Path(path))
    return found


def build_nginx(client: docker.DockerClient, tag: str, backend: str, run_label: str) -> str:
    """Build `tag`: nginx proxying port 8080 to `backend`:8080 (a network alias). Returns the image ID;
    FileNotFoundError if the lab has not unpacked nginx."""
    if not NGINX.exists():
        raise FileNotFoundError(f"{NGINX} is missing: run scripts/lab.sh up")
    context = Path(tempfile.mkdtemp(prefix="dockwarden-nginx-"))
    try:
        root = context / "rootfs"
        files = {Path("usr/sbin/nginx"): NGINX} | {lib.relative_to("/"): lib for lib in _libraries(NGINX)}
        for inside, source in files.items():
            (root / inside).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.resolve(), root / inside)
        (root / "etc/nginx").mkdir(parents=True)
        (root / "etc/nginx/nginx.conf").write_text(CONFIG.replace("BACKEND", backend))
        (root / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
        (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
        for folder in ("tmp", "run", "var/log/nginx", "var/lib/nginx"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        (context / "Dockerfile").write_text(
            "FROM scratch\nCOPY rootfs/ /\n"
            f'LABEL {LABEL}="{run_label}"\n'
            'CMD ["/usr/sbin/nginx", "-e", "stderr", "-g", "daemon off;", "-c", "/etc/nginx/nginx.conf"]\n'
        )
        image, _ = client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, nocache=True)
        return str(image.id)
    finally:
        shutil.rmtree(context, ignore_errors=True)


# The in-network client: busybox's wget in a loop (bounded: LOOPS requests, PAUSE apart), one line each.
LOOPS = 20_000
PAUSE = "0.05"


class NetworkClient:
    """A busybox container on `network` GETting http://TARGET:8080/ in a loop, resolving it through Docker's
    DNS on every request; its log has `ok BODY` or `fail` per request."""

    def __init__(
        self, client: docker.DockerClient, image: str, network: str, target: str, name: str, run_label: str
    ) -> None:
        # The address: the last one busybox's nslookup prints (Docker's DNS shuffles them); the request: a
        # GET through nc (see APPLETS in tests/support/images.py for why not wget); 5 s connect and idle
        # timeout. A 200 prints `ok` and the body's last word (the version marker).
        resolve = (
            f"a=; p=; for w in $(nslookup {target} 127.0.0.11 2>/dev/null); do "
            'if test "$p" = Address:; then case $w in *:53) ;; *) a=$w;; esac; fi; p=$w; done'
        )
        get = (
            'out=; test -n "$a" && out=$(printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 $a 8080 2>/dev/null); '
            'b=; for w in $out; do b=$w; done; case "$out" in *" 200 "*) echo "ok $b";; *) echo fail;; esac'
        )
        script = f"i=0; while test $i -lt {LOOPS}; do {resolve}; {get}; i=$((i+1)); sleep {PAUSE}; done"
        self.container = client.containers.run(
            image, ["sh", "-c", script], name=name, network=network, detach=True, labels={LABEL: run_label}
        )

    def lines(self) -> list[str]:
        return list(str(self.container.logs().decode()).splitlines())

    def failures(self) -> int:
        return sum(1 for line in self.lines() if line == "fail")

    def wait_for(self, body: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"ok {body}" in self.lines():
                return
            time.sleep(0.1)
        raise AssertionError(f"{body!r} never answered the in-network client; last: {self.lines()[-5:]}")

    def close(self) -> None:
        self.container.remove(force=True)


class HostClient:
    """GETs 127.0.0.1:PORT from the host in a loop (bounded in count and time), counting failures: a
    refused or reset connection, a timeout (5 s) or a status of 500 or more (nginx's 502)."""

    def __init__(self, port: int, max_requests: int = 200_000, max_seconds: float = 1800) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.ok: list[str] = []
        self.stamps: list[float] = []  # time.monotonic() of each success
        self.failed: list[str] = []
        self._limits = (max_requests, max_seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        for _ in range(self._limits[0]):
            if self._stop.is_set() or time.monotonic() - started > self._limits[1]:
                return
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:  # noqa: S310 -- 127.0.0.1 only
                    self.ok.append(response.read().decode().strip())
                    self.stamps.append(time.monotonic())
            except (OSError, http.client.HTTPException) as exc:
                self.failed.append(str(exc))
            time.sleep(0.01)

    def __enter__(self) -> HostClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for(self, body: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if body in self.ok[-50:]:
                return
            time.sleep(0.05)
        raise AssertionError(f"{body!r} never answered through {self.url}; failures: {self.failed[-3:]}")
