"""Garbage collection on both image stores: `dockwarden gc` against `docker image prune -a`.

For each engine (Engine 20.10, classic image store; Engine 28.5, containerd image store), in the same run:
N leaked versions (untagged images no container uses, each with its own random layer of PAYLOAD bytes,
dated 1971 so that nothing else on a shared engine is as old), then (a) `dockwarden gc` with a `min_age`
that spares every image younger than ~55 years, or (b) the naive baseline `docker image prune -a -f
--filter label=dockwarden.test=LABEL` (Docker CLI 28), each timed as a whole command, ROUNDS times per
side, alternating. Bytes: what dockwarden reports (`reclaimed_bytes`, and the sum of its per-removal
estimates), and the engine's own measure of image layers on disk (`/system/df` LayersSize) before minus
after, for both sides.

Run as root from the repository root:  .venv/bin/python -m bench.gc [--versions 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
from tests.support.images import LABEL, load_untagged, remove_labelled

CLI = "/usr/local/bin/docker"  # Docker CLI 28.2: speaks API 1.44+, which Engine 28.5 requires here
ENGINES = "20.10=unix:///var/run/docker.sock,28.5=unix:///var/run/dwlab-docker28.sock"
PAYLOAD = 512 * 1024
BORN = "1971-01-01T00:00:00Z"
MIN_AGE = "480000h"  # ~54.8 years: only images from before 1972 (the test suite's are from 1990 on)


def layers_on_disk(client: docker.DockerClient) -> int:
    """`/system/df` LayersSize; retried, since the containerd store fails it now and then."""
    for attempt in range(5):
        try:
            return int(client.api.df().get("LayersSize") or 0)
        except docker.errors.APIError:
            if attempt == 4:
                raise
            time.sleep(0.5)
    return 0


def leak(client: docker.DockerClient, label: str, versions: int) -> list[str]:
    return [load_untagged(client, label, BORN, size=PAYLOAD) for _ in range(versions)]


def dockwarden_gc(host: str, work: Path) -> tuple[float, dict[str, Any]]:
    cfg = work / "dw.yaml"
    cfg.write_text(
        f"interval: 1m\nstate_dir: {work / 'state'}\ndocker_host: {host}\n"
        f"gc: {{min_age: {MIN_AGE}}}\nservices: {{}}\n"
    )
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dockwarden", "gc", "-c", str(cfg), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"dockwarden gc failed: {proc.stderr[-2000:]}")
    return took, json.loads(proc.stdout)


def prune(host: str, label: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [CLI, "image", "prune", "-a", "-f", "--filter", f"label={LABEL}={label}"],
        env={**os.environ, "DOCKER_HOST": host},
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - started


def one_side(client: docker.DockerClient, host: str, side: str, versions: int, work: Path) -> dict[str, Any]:
    """Leak `versions` images under a fresh label, collect them with `side`; its time and bytes."""
    label = f"bench-gc-{uuid.uuid4().hex[:8]}"
    try:
        made = leak(client, label, versions)
        before = layers_on_disk(client)
        row: dict[str, Any] = {}
        if side == "dockwarden":
            took, result = dockwarden_gc(host, work)
            ours = [r for r in result["removals"] if r["done"] and r["id"] in made]
            row["removed"] = len(ours)
            row["reported_reclaimed_bytes"] = result["reclaimed_bytes"]
            row["estimated_bytes"] = sum(r["bytes"] for r in ours)
            row["other_removals"] = len([r for r in result["removals"] if r["id"] not in made])
        else:
            took = prune(host, label)
            present = {i["Id"] for i in client.api.images(all=True)}
            row["removed"] = len([i for i in made if i not in present])
        row["seconds"] = took
        row["df_reclaimed_bytes"] = before - layers_on_disk(client)
        return row
    finally:
        remove_labelled(client, label)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default=ENGINES, help="NAME=DOCKER_HOST,...")
    parser.add_argument("--out", default="bench/results/gc.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockwarden-bench-gc-"))
    results: dict[str, Any] = {"versions": args.versions, "payload_bytes": PAYLOAD, "engines": {}}
    for name, _, host in (item.partition("=") for item in args.engines.split(",")):
        client = docker.DockerClient(base_url=host, version="auto", timeout=300)
        runs: dict[str, list[dict[str, Any]]] = {"dockwarden": [], "prune": []}
        for _ in range(args.rounds):
            for side in ("dockwarden", "prune"):  # alternating, so drift hits both alike
                runs[side].append(one_side(client, host, side, args.versions, work))
        summary = {
            side: {
                "median_s": statistics.median(r["seconds"] for r in rows),
                "removed": [r["removed"] for r in rows],
                "df_reclaimed_bytes": [r["df_reclaimed_bytes"] for r in rows],
                **(
                    {
                        "reported_reclaimed_bytes": [r["reported_reclaimed_bytes"] for r in rows],
                        "estimated_bytes": [r["estimated_bytes"] for r in rows],
                        "other_removals": [r["other_removals"] for r in rows],
                    }
                    if side == "dockwarden"
                    else {}
                ),
            }
            for side, rows in runs.items()
        }
        summary["api_version"] = client.api.api_version
        results["engines"][name] = summary
        print(name, json.dumps(summary))
        client.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
