"""The daemon's idle footprint with the HTTP API off and on (issue 13), side by side in one run.

N containers (one tiny busybox image pushed to a throwaway registry on 127.0.0.1) watched by one config;
`dockwarden run` is started with that config without `api:` and with it, alternately, `--rounds` times each.
After its first cycle (and, with the API, one request to /metrics, /v1/status and the status page, so that
what they load is counted), each daemon idles `--idle` seconds: its resident memory (VmRSS) at the end and
its CPU time over the idle window are recorded. Medians per variant and the on/off ratios are printed.

Run as root from the repository root:  .venv/bin/python -m bench.api [--services 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import docker
from tests.support.images import LABEL, ImageFactory, remove_labelled
from tests.support.registry import free_port, start_registry

TOKEN = "bench-token-0123456789"  # noqa: S105 -- a throwaway daemon's
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _wait_cycle(log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if '"update.cycle_finished"' in log.read_text():
            return
        time.sleep(0.2)
    raise RuntimeError(f"no cycle finished:\n{log.read_text()[-2000:]}")


def _get(url: str, token: str | None = TOKEN) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 -- an http:// loopback URL we built
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 -- the same
        answer.read()


def _one(cfg: Path, api: str | None, idle: float, work: Path) -> tuple[int, float]:
    """(VmRSS KiB at the end, CPU seconds over the idle window) of one daemon."""
    log = work / f"run-{uuid.uuid4().hex[:6]}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dockwarden", "run", "-c", str(cfg)], stdout=out, stderr=out
        )
    try:
        _wait_cycle(log)
        if api is not None:
            _get(f"http://{api}/metrics", None)
            _get(f"http://{api}/v1/status")
            _get(f"http://{api}/")
        time.sleep(2)  # let the first cycle's threads settle
        cpu_before = _cpu_seconds(proc.pid)
        time.sleep(idle)
        return _rss_kib(proc.pid), _cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _config(work: Path, names: list[str], api: str | None) -> Path:
    lines = ["interval: 1h", f"state_dir: {work / 'state'}", "gc: {enabled: false}"]
    if api is not None:
        token = work / "token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        lines += ["api:", f'  listen: "{api}"', f"  token_file: {token}"]
    lines.append("services:")
    lines += [f"  {name}: {{}}" for name in names]
    path = work / ("on.yaml" if api else "off.yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measured per daemon")
    args = parser.parse_args()
    client = docker.from_env(version="auto", timeout=120)
    label = f"bench-api-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry")
        images = ImageFactory(client, label)
        try:
            tag = f"{registry.host}/idle:latest"
            images.build(tag, "idle", cmd=["sleep", "3600"])
            images.push(tag)
            names = [f"dw-bench-api-{label[-8:]}-{i}" for i in range(args.services)]
            for name in names:
                client.containers.run(tag, name=name, detach=True, labels={LABEL: label})
            api = f"127.0.0.1:{free_port()}"
            variants = {"off": _config(work, names, None), "on": _config(work, names, api)}
            found: dict[str, list[tuple[int, float]]] = {"off": [], "on": []}
            for _ in range(args.rounds):
                for variant, cfg in variants.items():
                    found[variant].append(_one(cfg, api if variant == "on" else None, args.idle, work))
            _report(found, args)
        finally:
            with contextlib.suppress(Exception):
                remove_labelled(client, label)
            images.cleanup()
            registry.stop()


def _report(found: dict[str, list[tuple[int, float]]], args: argparse.Namespace) -> None:
    rss = {v: statistics.median(r for r, _ in rows) / 1024 for v, rows in found.items()}
    cpu = {v: statistics.median(c for _, c in rows) * 1000 for v, rows in found.items()}
    print(
        json.dumps({"services": args.services, "rounds": args.rounds, "idle_s": args.idle, "samples": found})
    )
    print(f"{'api':<5} {'RSS MiB (median)':>17} {f'CPU ms in {args.idle:.0f} s idle (median)':>28}")
    for variant in ("off", "on"):
        print(f"{variant:<5} {rss[variant]:>17.1f} {cpu[variant]:>28.0f}")
    tick = 1000 / CLK_TCK
    cpu_ratio = (
        f"x{cpu['on'] / cpu['off']:.2f}"
        if min(cpu.values()) >= 2 * tick
        else f"both within 2 ticks ({tick:.0f} ms)"
    )
    print(f"on/off: RSS x{rss['on'] / rss['off']:.2f} (+{rss['on'] - rss['off']:.1f} MiB); CPU {cpu_ratio}")


if __name__ == "__main__":
    main()
