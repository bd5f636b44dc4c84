"""Upgrade downtime and rollback time (issue 3), on the real engine and a real registry on 127.0.0.1.

Downtime: the longest gap between successful HTTP responses from the service's published port while a
bounded load loop runs, for (a) `dockwarden update` and (b) the six commands of the post this project grew
from (docker pull, stop, rm, rmi :current, tag latest current, run with the same flags), on the same
images, side by side in one run; once with an app whose PID 1 exits on SIGTERM and once with a PID 1 that
ignores it (busybox httpd as PID 1: the kernel drops signals PID 1 has no handler for).

Rollback time: from dockwarden's `upgrade.failed` log event (the gate failing: the new image exits at once)
to the old version answering again; and, for scale, the app's own start time (docker start -> first answer).

Run as root from the repository root:  .venv/bin/python -m bench.downtime [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import docker
import docker.errors
from tests.support.images import LABEL, ImageFactory, remove_labelled
from tests.support.registry import Registry, start_registry

HANDLES_TERM = ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
IGNORES_TERM = ["httpd", "-f", "-p", "8080", "-h", "/www"]
APPS = {"handles-term": HANDLES_TERM, "ignores-term": IGNORES_TERM}
# dockwarden as shipped, dockwarden without CAP_NET_RAW (no neighbour refresh), and the post's script.
SIDES = ("dockwarden", "dockwarden-no-net-raw", "script")
MAX_REQUESTS = 20_000  # the load loop's bounds: count and time
MAX_SECONDS = 60.0
# A short client timeout, so the gap measures when the service answers again, not how long a client
# stuck on a dropped SYN waits for its retransmit (1 s on Linux): that would hide differences under 1 s.
PROBE_TIMEOUT = 0.2


class Load:
    """GETs 127.0.0.1:PORT in a loop (bounded), remembering when each success happened and what it said."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.ok: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.time()
        for _ in range(MAX_REQUESTS):
            if self._stop.is_set() or time.time() - started > MAX_SECONDS:
                return
            try:
                with urllib.request.urlopen(self.url, timeout=PROBE_TIMEOUT) as response:  # noqa: S310 -- http://127.0.0.1 built above
                    self.ok.append((time.time(), response.read().decode().strip()))
            except (OSError, http.client.HTTPException):  # a half-open port can answer with garbage
                pass
            time.sleep(0.01)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for(self, body: str, timeout: float = 60, after: float = 0.0) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hit = next((t for t, b in self.ok if b == body and t > after), None)
            if hit is not None:
                return hit
            time.sleep(0.01)
        seen = sorted({b for _, b in self.ok})
        raise RuntimeError(f"{body!r} never answered on {self.url}; answers seen: {seen}")

    def longest_gap(self) -> float:
        stamps = [t for t, _ in self.ok]
        return max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True)


def _run_app(tag: str, name: str, port: int, run_label: str) -> None:
    # The same flags for both sides' first run and for the script's last command.
    _docker(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080", "--label", f"{LABEL}={run_label}", tag
    )


def script_upgrade(tag: str, name: str, port: int, run_label: str) -> None:
    """The post's six commands, with `current` tagging the running version."""
    repo = tag.rsplit(":", 1)[0]
    _docker("pull", tag)
    _docker("stop", name)
    _docker("rm", name)
    subprocess.run(["docker", "rmi", f"{repo}:current"], capture_output=True, check=False)  # absent at first
    _docker("tag", tag, f"{repo}:current")
    _run_app(tag, name, port, run_label)


def dockwarden_update(cfg: Path, service: str, *, net_raw: bool = True) -> subprocess.CompletedProcess[str]:
    """`dockwarden update`; without `net_raw`, under `capsh --drop=cap_net_raw` (CAP_NET_RAW gone from the
    bounding set, so root's exec cannot have it): dockwarden cannot refresh the neighbour entry then, as
    under a systemd unit that does not grant it."""
    command = [sys.executable, "-m", "dockwarden", "update", "-c", str(cfg), service]
    if not net_raw:
        command = ["capsh", "--drop=cap_net_raw", "--", "-c", 'exec "$0" "$@"', *command]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _config(path: Path, containers: dict[str, str]) -> Path:
    lines = [f"state_dir: {path.parent / ('state-' + path.stem)}", "stability_window: 2s", "services:"]
    lines += [f"  {svc}: {{container: {name}}}" for svc, name in containers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def one_round(
    images: ImageFactory,
    client: docker.DockerClient,
    registry: Registry,
    cmd: list[str],
    run_label: str,
    work: Path,
) -> dict[str, float]:
    suffix = uuid.uuid4().hex[:6]
    results = {}
    for side in SIDES:
        tag = f"{registry.host}/bench-{side}-{suffix}:latest"
        images.build(tag, f"{side}-v1", cmd=cmd)
        images.push(tag)
        name, port = f"dw-bench-{side}-{suffix}", _free_port()
        _run_app(tag, name, port, run_label)
        images.build(tag, f"{side}-v2", cmd=cmd)
        images.push(tag)
        cfg = _config(work / f"{side}-{suffix}.yaml", {"web": name})
        with Load(port) as load:
            load.wait_for(f"{side}-v1")
            if side != "script":
                proc = dockwarden_update(cfg, "web", net_raw=side == "dockwarden")
                if proc.returncode != 0:
                    raise RuntimeError(proc.stdout + proc.stderr[-2000:])
                _expect_refresh(proc.stderr, refreshed=side == "dockwarden")
            else:
                script_upgrade(tag, name, port, run_label)
            load.wait_for(f"{side}-v2")
            time.sleep(0.3)
        results[side] = load.longest_gap()
        client.containers.get(name).remove(force=True)
    return results


def _expect_refresh(log: str, *, refreshed: bool) -> None:
    """Fail the round unless dockwarden refreshed the neighbour entry (with CAP_NET_RAW) or said it could
    not (without): a side that silently measured the other would be worthless."""
    events = {json.loads(line).get("event") for line in log.splitlines() if line.startswith("{")}
    wanted = "neighbour.refreshed" if refreshed else "neighbour.refresh_unavailable"
    if wanted not in events:
        raise RuntimeError(f"no {wanted} in dockwarden's log:\n{log[-3000:]}")


def rollback_round(
    images: ImageFactory, client: docker.DockerClient, registry: Registry, run_label: str, work: Path
) -> dict[str, float]:
    suffix = uuid.uuid4().hex[:6]
    tag = f"{registry.host}/bench-rollback-{suffix}:latest"
    images.build(tag, "rb-v1", cmd=HANDLES_TERM)
    images.push(tag)
    name, port = f"dw-bench-rb-{suffix}", _free_port()
    _run_app(tag, name, port, run_label)
    # The app's own start time: stop it, start it, time until it answers.
    container = client.containers.get(name)
    container.stop(timeout=10)
    with Load(port) as load:
        t0 = time.time()
        container.start()
        app_start = load.wait_for("rb-v1") - t0
    images.build(tag, "rb-bad", cmd=["false"])
    images.push(tag)
    cfg = _config(work / f"rb-{suffix}.yaml", {"web": name})
    with Load(port) as load:
        load.wait_for("rb-v1")
        proc = dockwarden_update(cfg, "web")
        events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
        failed = next((e for e in events if e["event"] == "upgrade.failed"), None)
        if failed is None:
            raise RuntimeError(f"the bad image was not rolled back:\n{proc.stdout}{proc.stderr[-3000:]}")
        failed_at = datetime.fromisoformat(failed["timestamp"].replace("Z", "+00:00")).timestamp()
        back = load.wait_for("rb-v1", after=failed_at)
        result = next(e for e in events if e["event"] == "rollback.finished")
    container = client.containers.get(name)
    container.remove(force=True)
    return {
        "rollback_s": back - failed_at,
        "app_start_s": app_start,
        "rollback_step_ms": result["duration_ms"],
    }


ENGINES = {
    "20.10": "unix:///var/run/docker.sock",
    "26.1": "unix:///var/run/dwlab-docker26.sock",
    "28.5": "unix:///var/run/dwlab-docker28.sock",
}


def _answering(url: str) -> docker.DockerClient | None:
    try:
        client = docker.DockerClient(base_url=url, version="auto", timeout=120)
    except docker.errors.DockerException:
        return None
    return client


def one_engine(
    label: str, client: docker.DockerClient, registry: Registry, rounds: int, apps: list[str], work: Path
) -> dict[str, object]:
    """Every measurement on one engine; DOCKER_HOST is set to it, so the CLI and dockwarden use it too."""
    run_label = f"bench-{uuid.uuid4().hex[:8]}"
    images = ImageFactory(client, run_label)
    results: dict[str, object] = {"version": client.version()["Version"]}
    try:
        for app in apps:
            done = [one_round(images, client, registry, APPS[app], run_label, work) for _ in range(rounds)]
            medians = {side: statistics.median(r[side] for r in done) for side in SIDES}
            row: dict[str, object] = {
                side: {"median_s": medians[side], "all_s": [r[side] for r in done]} for side in medians
            }
            row["ratio"] = medians["dockwarden"] / medians["script"]
            row["ratio_without_net_raw"] = medians["dockwarden-no-net-raw"] / medians["script"]
            results[app] = row
            print(label, app, json.dumps(row), flush=True)
        rollbacks = [rollback_round(images, client, registry, run_label, work) for _ in range(rounds)]
        summary: dict[str, object] = {
            key: statistics.median(r[key] for r in rollbacks)
            for key in ("rollback_s", "app_start_s", "rollback_step_ms")
        }
        summary["all"] = rollbacks
        results["rollback"] = summary
        print(label, "rollback", json.dumps(summary), flush=True)
    finally:
        remove_labelled(client, run_label)
        images.cleanup()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", action="append", choices=sorted(ENGINES), help="default: all that answer")
    parser.add_argument("--app", action="append", choices=sorted(APPS), help="default: both")
    parser.add_argument("--out", default="bench/results/downtime.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockwarden-bench-"))
    registry = start_registry(work / "registry")
    results: dict[str, object] = {"rounds": args.rounds}
    try:
        for label in args.engine or list(ENGINES):
            client = _answering(ENGINES[label])
            if client is None:
                print(label, "does not answer: skipped", flush=True)
                continue
            os.environ["DOCKER_HOST"] = ENGINES[label]
            try:
                results[label] = one_engine(
                    label, client, registry, args.rounds, args.app or list(APPS), work
                )
            finally:
                client.close()
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    os.sync()


if __name__ == "__main__":
    main()
