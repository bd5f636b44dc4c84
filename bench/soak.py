"""The soak (issue 12): the daemon through CYCLES upgrades on one engine, alternating a failing image and a
good one, watched from /proc and the engine for anything that grows.

One service (a `docker run` of a busybox app whose PID 1 exits on SIGTERM) follows `bench-soak:latest` in
this run's own registry on 127.0.0.1. Cycle N publishes a new digest of the failing image (odd N: its CMD is
`false`, so the container exits at once, the gate fails at its first look and the transaction rolls back) or
of the good one (even N: upgraded, the replaced version retained, the oldest retained one released). Each
cycle needs a new digest, because a failed digest is skip-listed and never tried again; a digest is made
without a build: a new image config (one label differs) over the same layer, and a manifest naming it, put
as `latest` (three requests). The daemon is the real `dockwarden run` in its own process (through
`bench.fastdaemon`, which only shortens the interval to 0.5 s), with `stability_window: 1s`, `keep_previous:
2` and garbage collection off (it would touch other users' dangling images on this shared engine).

After each cycle the bench waits for the daemon's outcome in its log (`upgrade.finished`, or
`rollback.finished` for a failing image), then for its next cycle to start (so retention has run), and
checks that the container runs the image it should. Every EVERY cycles it records the daemon's RSS, open
file descriptors and threads (/proc/PID), the engine's containers and images carrying this run's label,
and the size of the state directory. At the end the daemon is stopped, the objects left are compared with
what should be there (the service's container; its running image and `keep_previous` retained ones), and
everything this run created is removed, also on Ctrl-C or SIGTERM.

Run as root from the repository root:  .venv/bin/python -m bench.soak [--cycles 500] [--every 50]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker
import requests
from tests.support.images import LABEL, ImageFactory, leftovers, remove_labelled
from tests.support.registry import MANIFEST_V2, Registry, start_registry

from bench import procstat

REPO = "bench-soak"
GOOD_CMD = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
FAILING_CMD = ["false"]
KEEP_PREVIOUS = 2
CYCLE_TIMEOUT = 90.0  # seconds from a publish to the daemon's next cycle after the outcome
INTERVAL = "0.5"  # seconds between the fast daemon's cycles
ROOT = Path(__file__).resolve().parent.parent


class Publisher:
    """New digests of two images, each a new config blob over the image's own layer, tagged `latest`."""

    def __init__(self, registry: Registry, images: ImageFactory) -> None:
        self.registry = registry
        self.bases: dict[bool, tuple[dict[str, Any], dict[str, Any]]] = {}
        for good, cmd in ((True, GOOD_CMD), (False, FAILING_CMD)):
            tag = f"{registry.host}/{REPO}:{'good' if good else 'failing'}-base"
            images.build(tag, "good" if good else "failing", cmd=cmd)
            images.push(tag)
            images.client.images.remove(tag)  # so that every image left on the engine is the daemon's
            body, _digest = registry.get_manifest(REPO, tag.rsplit(":", 1)[1])
            manifest = json.loads(body)
            config = requests.get(
                f"{registry.url}/v2/{REPO}/blobs/{manifest['config']['digest']}", timeout=10
            ).json()
            self.bases[good] = (manifest, config)

    def publish(self, cycle: int, good: bool) -> tuple[str, str]:
        """Put a new digest of the good or failing image as `latest`; returns (manifest digest, image ID)."""
        manifest, config = copy.deepcopy(self.bases[good])
        config["config"]["Labels"]["dockwarden.bench.cycle"] = str(cycle)
        blob = json.dumps(config).encode()
        image_id = self.registry.put_blob(REPO, blob)
        manifest["config"]["digest"] = image_id
        manifest["config"]["size"] = len(blob)
        return self.registry.put_manifest(REPO, "latest", manifest, MANIFEST_V2), image_id


class Log:
    """The daemon's JSON log, read on from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def new_events(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as stream:
            stream.seek(self._offset)
            data = self._partial + stream.read()
            self._offset = stream.tell()
        *lines, self._partial = data.split(b"\n")
        return [json.loads(line) for line in lines if line.startswith(b"{")]

    def wait_for(self, wanted: set[str], timeout: float, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.new_events():
                if event["event"] in wanted:
                    return event
                if event["event"] in {"upgrade.crashed", "cycle.crashed", "rollback.failed"}:
                    raise RuntimeError(f"the daemon reported {event}")
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError(f"no {sorted(wanted)} within {timeout} s; log: {self.path}")


@dataclass(frozen=True, kw_only=True)
class Sample:
    cycle: int
    seconds: float  # since the first cycle began
    rss_mb: float
    fds: int
    threads: int
    containers: int  # carrying this run's label, any state
    images: int  # carrying this run's label, tagged or not
    state_dir_kib: int


def sample(
    cycle: int, started: float, pid: int, client: docker.DockerClient, run_label: str, state: Path
) -> Sample:
    use = procstat.usage(pid)
    labelled = {"label": f"{LABEL}={run_label}"}
    return Sample(
        cycle=cycle,
        seconds=round(time.monotonic() - started, 1),
        rss_mb=use.rss_mb,
        fds=use.fds,
        threads=use.threads,
        containers=len(client.api.containers(all=True, filters=labelled)),
        images=len(client.api.images(all=True, filters=labelled)),
        state_dir_kib=sum(p.stat().st_size for p in state.rglob("*") if p.is_file()) // 1024,
    )


def one_cycle(
    n: int, publisher: Publisher, log: Log, proc: subprocess.Popen[bytes], ctx: dict[str, Any]
) -> float:
    """Publish cycle `n`'s digest, wait for its outcome and the cycle after it; returns the seconds taken."""
    good = n % 2 == 0
    started = time.monotonic()
    _digest, image_id = publisher.publish(n, good)
    wanted = {"upgrade.finished"} if good else {"rollback.finished"}
    unwanted = {"rollback.finished", "upgrade.failed"} if good else {"upgrade.finished"}
    outcome = log.wait_for(wanted | unwanted, CYCLE_TIMEOUT, proc)
    if outcome["event"] in unwanted:
        raise RuntimeError(f"cycle {n} ({'good' if good else 'failing'} image): {outcome}")
    log.wait_for({"cycle.started"}, CYCLE_TIMEOUT, proc)
    if good:
        ctx["running"] = image_id
    running = ctx["client"].api.inspect_container(ctx["name"])
    if running["Image"] != ctx["running"] or not running["State"]["Running"]:
        raise RuntimeError(f"cycle {n}: the service runs {running['Image']}, expected {ctx['running']}")
    return time.monotonic() - started


def start_service(
    client: docker.DockerClient, publisher: Publisher, registry: Registry, run_label: str
) -> tuple[str, str]:
    _digest, image_id = publisher.publish(0, good=True)
    repo = f"{registry.host}/{REPO}"
    client.images.pull(repo, tag="latest")
    name = f"dw-bench-soak-{run_label}"
    client.containers.run(f"{repo}:latest", name=name, detach=True, labels={LABEL: run_label})
    return name, image_id


def write_config(work: Path, name: str, registry: Registry) -> Path:
    path = work / "soak.yaml"
    path.write_text(
        f"state_dir: {work / 'state'}\nstability_window: 1s\nkeep_previous: {KEEP_PREVIOUS}\n"
        "gc: {enabled: false}\n"
        f"services:\n  web: {{container: {name}, image: '{registry.host}/{REPO}:latest'}}\n"
    )
    return path


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def soak(args: argparse.Namespace, client: docker.DockerClient, run_label: str, work: Path) -> dict[str, Any]:
    images = ImageFactory(client, run_label)
    registry = start_registry(work / "registry")
    proc: subprocess.Popen[bytes] | None = None
    try:
        publisher = Publisher(registry, images)
        name, image_id = start_service(client, publisher, registry, run_label)
        cfg = write_config(work, name, registry)
        log_path = work / "daemon.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.fastdaemon", str(cfg), INTERVAL],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        log = Log(log_path)
        log.wait_for({"cycle.finished"}, 60, proc)
        ctx = {"client": client, "name": name, "running": image_id}
        started = time.monotonic()
        samples = [sample(0, started, proc.pid, client, run_label, work / "state")]
        print(json.dumps(asdict(samples[-1])), flush=True)
        took = []
        for n in range(1, args.cycles + 1):
            took.append(one_cycle(n, publisher, log, proc, ctx))
            if n % args.every == 0 or n == args.cycles:
                samples.append(sample(n, started, proc.pid, client, run_label, work / "state"))
                print(json.dumps(asdict(samples[-1])), flush=True)
        wall = time.monotonic() - started
        exit_code = stop_daemon(proc)
        return {
            "cycles": args.cycles,
            "wall_s": round(wall, 1),
            "cycle_s_median": round(statistics.median(took), 2),
            "cycle_s_max": round(max(took), 2),
            "daemon_exit_code": exit_code,
            "samples": [asdict(s) for s in samples],
            "left": objects_left(client, run_label, name),
        }
    finally:
        if proc is not None:
            stop_daemon(proc)
        registry.stop()
        images.cleanup()


def objects_left(client: docker.DockerClient, run_label: str, name: str) -> dict[str, Any]:
    """What this run's label finds on the engine beyond what should be there, after the daemon stopped."""
    labelled = {"label": f"{LABEL}={run_label}"}
    containers = [c["Names"][0].lstrip("/") for c in client.api.containers(all=True, filters=labelled)]
    images = client.api.images(all=True, filters=labelled)
    expected_images = 1 + KEEP_PREVIOUS  # the running version and the retained ones
    return {
        "containers": containers,
        "images": [{"id": i["Id"][7:19], "tags": i.get("RepoTags") or []} for i in images],
        "leaked_containers": len([c for c in containers if c != name]),
        "leaked_images": max(0, len(images) - expected_images),
        "missing_images": max(0, expected_images - len(images)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--every", type=int, default=50, help="record usage every N cycles")
    parser.add_argument("--out", default="bench/results/soak.json")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the daemon's log here at the end")
    args = parser.parse_args()
    # A SIGTERM cleans up like a Ctrl-C: the finally blocks remove what this run created.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    client = docker.from_env(version="auto", timeout=120)
    run_label = f"bench-soak-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="dockwarden-bench-soak-"))
    try:
        results = soak(args, client, run_label, work)
    finally:
        remove_labelled(client, run_label)
        after = leftovers(client, run_label)
        if args.keep_log and (work / "daemon.log").exists():
            shutil.copy(work / "daemon.log", args.keep_log)
        shutil.rmtree(work, ignore_errors=True)
    results["left_after_cleanup"] = after
    print(json.dumps({k: v for k, v in results.items() if k != "samples"}, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if after or results["left"]["leaked_containers"] or results["left"]["leaked_images"]:
        raise SystemExit("the soak leaked objects; see above")


if __name__ == "__main__":
    main()
