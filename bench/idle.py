"""The idle daemon's footprint (issue 12): resident memory and CPU of `dockwarden run` watching 100 services.

Every service is up to date, so each cycle is what a daemon does nearly all of its life: one snapshot of the
engine's containers and images, one HEAD per distinct image reference to a registry on 127.0.0.1 (this run's
own, so its access log counts only these requests), and a log line per service. By default the 100 services
follow 100 distinct tags (`bench-idle:s0` ... `s99`, one manifest), the worst case of detection for 100
services: 100 HEADs per cycle; `--tags N` spreads them over N tags instead. Their 100 containers are created
and never started: a check reads a container's image, not its processes, so a running one would cost the
daemon nothing more, while 100 running containers would cost the shared engine a shim process each.

Each daemon is a `python -m dockwarden run` subprocess, measured from /proc/PID after it has finished two
cycles (warm): VmRSS, and CPU as utime + stime ticks over the window, as a percentage of one core. With
`--baseline REF`, the package as it was at git REF (exported with `git archive`, put first on PYTHONPATH) runs
beside the current one, at the same time, on the same containers and registry, each with its own state_dir; a
bare interpreter (`python -c` waiting on a signal) is measured as the floor. `--extra-config FILE` merges a
YAML mapping into the generated config (nested mappings merged key by key), for features that change the idle
cost (an API server, say).

Run as root from the repository root:
    .venv/bin/python -m bench.idle [--services 100] [--seconds 60] [--baseline REF] [--extra-config FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import yaml
from tests.support.images import LABEL, ImageFactory, remove_labelled
from tests.support.registry import MANIFEST_V2, Registry, start_registry

from bench import procstat

REPO = "bench-idle"
ROOT = Path(__file__).resolve().parent.parent
WARM_CYCLES = 2


def make_services(
    client: docker.DockerClient,
    registry: Registry,
    images: ImageFactory,
    count: int,
    tags: int,
    run_label: str,
) -> dict[str, str]:
    """`count` created containers over `tags` tags of one image pushed to `registry`; service -> name."""
    repo = f"{registry.host}/{REPO}"
    image_id = images.build(f"{repo}:s0", "idle")
    images.push(f"{repo}:s0")
    body, _digest = registry.get_manifest(REPO, "s0")
    services = {}
    for i in range(1, tags):
        registry.put_manifest(REPO, f"s{i}", body, MANIFEST_V2)  # same bytes: same digest
        client.api.tag(image_id, repo, f"s{i}")
    for i in range(count):
        name = f"dw-bench-idle-{run_label}-{i}"
        client.api.create_container(f"{repo}:s{i % tags}", name=name, labels={LABEL: run_label})
        services[f"svc{i}"] = name
    return services


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s keys set over it; where both hold a mapping, merged the same way."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def write_config(path: Path, services: dict[str, str], interval: str, extra: dict[str, Any]) -> Path:
    doc: dict[str, Any] = {
        "state_dir": str(path.parent / f"state-{path.stem}"),
        "interval": interval,
        # Collection removes dangling images engine-wide, and this engine is shared: never let it run.
        "gc": {"enabled": False},
        "services": {svc: {"container": name} for svc, name in services.items()},
    }
    path.write_text(yaml.safe_dump(merged(doc, extra), sort_keys=False))
    return path


@dataclass
class Side:
    """One process under measurement and where its log goes."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def cycles_finished(self) -> int:
        if not self.log.exists():
            return 0
        return sum('"cycle.finished"' in line for line in self.log.read_text(errors="replace").splitlines())


def start_daemon(name: str, cfg: Path, work: Path, pythonpath: Path | None) -> Side:
    log = work / f"{name}.log"
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dockwarden", "run", "-c", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return Side(name, proc, log)


def start_floor(work: Path) -> Side:
    """A bare interpreter that waits: what any Python process costs before importing anything."""
    log = work / "python.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import signal; signal.pause()"], stdout=out, stderr=subprocess.STDOUT
        )
    return Side("python", proc, log)


def export_tree(ref: str, work: Path) -> Path:
    """The package as it was at git `ref`, unpacked under `work`; returns the folder to put on PYTHONPATH."""
    dest = work / "baseline"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "daemon/dockwarden"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "daemon"


def wait_warm(sides: list[Side], interval_s: float) -> None:
    deadline = time.monotonic() + interval_s * (WARM_CYCLES + 2) + 30
    while time.monotonic() < deadline:
        for side in sides:
            if side.proc.poll() is not None:
                raise RuntimeError(f"{side.name} exited: {side.log.read_text()[-2000:]}")
        if all(side.cycles_finished() >= WARM_CYCLES for side in sides):
            return
        time.sleep(0.2)
    raise RuntimeError("the daemons did not finish their first cycles in time")


def measure(sides: list[Side], seconds: float) -> dict[str, dict[str, Any]]:
    """Sample every side once a second for `seconds`; CPU from the ticks spent over the whole window."""
    first = {s.name: procstat.usage(s.proc.pid) for s in sides}
    cycles = {s.name: s.cycles_finished() for s in sides}
    started = time.monotonic()
    rss: dict[str, list[int]] = {s.name: [] for s in sides}
    while time.monotonic() - started < seconds:
        time.sleep(1.0)
        for side in sides:
            rss[side.name].append(procstat.usage(side.proc.pid).rss_kib)
    wall = time.monotonic() - started
    results = {}
    for side in sides:
        last = procstat.usage(side.proc.pid)
        ticks = last.cpu_ticks - first[side.name].cpu_ticks
        results[side.name] = {
            "rss_mb_end": last.rss_mb,
            "rss_mb_max": round(max(rss[side.name]) / 1024, 1),
            "cpu_percent_of_one_core": round(100 * ticks / procstat.TICKS_PER_SECOND / wall, 2),
            "cpu_seconds": ticks / procstat.TICKS_PER_SECOND,
            "cycles_in_window": side.cycles_finished() - cycles[side.name],
            "fds": last.fds,
            "threads": last.threads,
        }
    return results


def stop(sides: list[Side]) -> None:
    for side in sides:
        if side.proc.poll() is None:
            side.proc.send_signal(signal.SIGTERM)
    for side in sides:
        try:
            side.proc.wait(15)
        except subprocess.TimeoutExpired:
            side.proc.kill()
            side.proc.wait()


def run(args: argparse.Namespace, client: docker.DockerClient, run_label: str, work: Path) -> dict[str, Any]:
    extra = yaml.safe_load(Path(args.extra_config).read_text()) if args.extra_config else {}
    if not isinstance(extra, dict):
        raise SystemExit(f"{args.extra_config}: not a YAML mapping")
    images = ImageFactory(client, run_label)
    registry = start_registry(work / "registry")
    sides: list[Side] = []
    try:
        services = make_services(client, registry, images, args.services, args.tags, run_label)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "daemon")], check=True)
        sides.append(
            start_daemon(
                "dockwarden", write_config(work / "current.yaml", services, args.interval, extra), work, None
            )
        )
        if args.baseline:
            tree = export_tree(args.baseline, work)
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], check=True)
            cfg = write_config(work / "baseline.yaml", services, args.interval, extra)
            sides.append(start_daemon(f"baseline {args.baseline}", cfg, work, tree))
        sides.append(start_floor(work))
        interval_s = float(args.interval.removesuffix("s"))
        wait_warm([s for s in sides if s.name != "python"], interval_s)
        mark = registry.mark()
        results = measure(sides, args.seconds)
        heads = registry.manifest_requests(mark)["HEAD"]
        return {
            "services": args.services,
            "distinct_tags": args.tags,
            "interval": args.interval,
            "seconds": args.seconds,
            "registry_heads_in_window": heads,
            "extra_config": extra,
            "sides": results,
        }
    finally:
        stop(sides)
        registry.stop()
        images.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--tags", type=int, default=100, help="distinct image references (HEADs per cycle)")
    parser.add_argument("--interval", default="10s", help="the daemon's interval, in seconds (NNs)")
    parser.add_argument("--seconds", type=float, default=60.0, help="the measuring window")
    parser.add_argument("--baseline", metavar="REF", help="also run the package as of this git ref")
    parser.add_argument("--extra-config", metavar="FILE", help="YAML mapping merged into the config")
    parser.add_argument("--out", default="bench/results/idle.json")
    args = parser.parse_args()
    # A SIGTERM cleans up like a Ctrl-C: the finally blocks below remove what this run created.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    client = docker.from_env(version="auto", timeout=120)
    run_label = f"bench-idle-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="dockwarden-bench-idle-"))
    try:
        results = run(args, client, run_label, work)
    finally:
        remove_labelled(client, run_label)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
