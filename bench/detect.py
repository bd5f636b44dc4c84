"""Detection benchmarks (issue 2), on the real engine and a real registry on 127.0.0.1.

(a) Registry requests per unchanged image per cycle, counted in the registry's access log: dockwarden's
    check side by side with docker-py's `images.get_registry_data`.
(b) Cycle wall time for 10, 100 and 1000 distinct images behind 50 ms of added round-trip latency (a
    delaying proxy on 127.0.0.1): dockwarden's bounded-concurrency cycle side by side with the same checks
    one after another (the same code with a bound of 1), plus services sharing images.

(c) With `--engines NAME=DOCKER_HOST,...`: (a) and (b) for each engine in the same run, side by side, e.g.
    Engine 20.10 (classic image store) and Engine 28.5 (containerd image store). Each engine runs its own
    copy of the image; for (b) every repository holds that image's manifest unchanged (mirrors of one
    image), since the containerd store knows a running image by its manifest, not by its config.

Run as root from the repository root:  .venv/bin/python -m bench.detect [--sizes 10,100,1000]
    .venv/bin/python -m bench.detect --sizes 100 \
        --engines 20.10=unix:///var/run/docker.sock,28.5=unix:///var/run/dwlab-docker28.sock
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import docker
from tests.support.images import LABEL, ImageFactory, remove_labelled
from tests.support.registry import Registry, start_registry

from dockwarden import logs
from dockwarden.check import Checker, Status
from dockwarden.config import Service, Update
from dockwarden.engine import Engine, registry_credentials
from dockwarden.imageref import parse
from dockwarden.registry import RegistryClient

RTT = 0.050


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _counts(registry: Registry, mark: int) -> Counter[str]:
    time.sleep(0.1)
    seen = registry.requests_seen()[mark:]
    counts: Counter[str] = Counter()
    for method, path, _ in seen:
        kind = "manifest" if "/manifests/" in path else "blob" if "/blobs/" in path else "other"
        counts[f"{method} {kind}"] += 1
    return counts


def bench_requests(
    registry: Registry,
    client: docker.DockerClient,
    tag: str,
    container: str,
    cycles: int,
    docker_host: str | None = None,
) -> dict[str, Any]:
    engine = Engine.connect(docker_host)
    checker = Checker(engine, RegistryClient(registry_credentials), engine.platform())
    service = Service(name="web", container=container, update=Update.MONITOR)
    checker.cycle([service], 8)  # warm-up: the first contact may pay for a token or a 401
    mark = registry.mark()
    for _ in range(cycles):
        (result,) = checker.cycle([service], 8).results
        assert result.status == "up-to-date", result
    ours = _counts(registry, mark)
    mark = registry.mark()
    for _ in range(cycles):
        client.images.get_registry_data(tag)
    theirs = _counts(registry, mark)
    return {
        "cycles": cycles,
        "dockwarden_per_cycle": {k: v / cycles for k, v in sorted(ours.items())},
        "get_registry_data_per_call": {k: v / cycles for k, v in sorted(theirs.items())},
    }


def make_repos(
    registry: Registry, base_repo: str, count: int, prefix: str = "bench/img", mirror: bool = False
) -> list[str]:
    """`count` repositories holding distinct manifests of one image (cheap: blobs are mounted, not copied);
    with `mirror`, the image's own manifest, byte for byte (mirrors)."""
    raw, _ = registry.get_manifest(base_repo, "latest")
    manifest = json.loads(raw)
    names = []
    for i in range(count):
        repo = f"{prefix}{i:04d}"
        for blob in [manifest["config"], *manifest["layers"]]:
            registry.mount_blob(repo, blob["digest"], base_repo)
        # An annotation makes each manifest, and so each digest, distinct; the image stays the same.
        body: Any = raw if mirror else {**manifest, "annotations": {"bench.index": str(i)}}
        registry.put_manifest(repo, "latest", body, str(manifest["mediaType"]))
        names.append(repo)
    return names


class ProxyProcess:
    """The latency proxy (tests/support/latency.py) in its own process."""

    def __init__(self, upstream: str, rtt: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.latency", "--upstream", upstream, "--rtt", str(rtt)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.host = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def bench_latency(
    registry: Registry,
    proxy: ProxyProcess,
    repos: list[str],
    container: str,
    concurrency: int,
    rounds: int,
    services_per_image: int = 1,
    docker_host: str | None = None,
) -> dict[str, Any]:
    engine = Engine.connect(docker_host)
    client = RegistryClient(registry_credentials, timeout=30, pool_size=max(concurrency, 1))
    checker = Checker(engine, client, engine.platform())
    services = [
        Service(
            name=f"s{i}-{k}",
            container=container,
            image=parse(f"{proxy.host}/{repo}:latest"),
            update=Update.MONITOR,
        )
        for i, repo in enumerate(repos)
        for k in range(services_per_image)
    ]
    first = checker.cycle(services, concurrency)  # learns each digest once (GET), as a daemon would
    assert all(r.status == "up-to-date" for r in first.results), [r for r in first.results if r.error][:3]
    before = registry.mark()
    times, cpu, others = [], [], []
    helpers = [registry.process.pid, proxy.proc.pid] if registry.process else [proxy.proc.pid]
    for _ in range(rounds):
        helpers_before = sum(_proc_cpu(pid) for pid in helpers)
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = checker.cycle(services, concurrency)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        others.append(sum(_proc_cpu(pid) for pid in helpers) - helpers_before)
        assert summary.count(Status.UP_TO_DATE) == len(services)
    requests_per_cycle = sum(_counts(registry, before).values()) / rounds
    client.close()
    engine.close()
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "checker_cpu_s": statistics.median(cpu),
        "registry_and_proxy_cpu_s": statistics.median(others),  # on the same two cores
        "requests_per_cycle": requests_per_cycle,
    }


def bench_engines(
    registry: Registry, engines: list[tuple[str, str]], sizes: list[int], concurrency: int, label: str
) -> dict[str, Any]:
    """(a) and (b) on each engine in turn, in this one run: its own build of the image, its own container."""
    proxy = ProxyProcess(registry.host, RTT)
    found: dict[str, Any] = {}
    try:
        for name, host in engines:
            client = docker.DockerClient(base_url=host, version="auto", timeout=300)
            factory = ImageFactory(client, label)
            slug = name.replace(".", "")
            try:
                tag = f"{registry.host}/bench/e{slug}:latest"
                factory.build_and_push(tag, f"{label}-{slug}")
                container = f"dw-bench-{label}-{slug}"
                client.containers.run(tag, name=container, detach=True, labels={LABEL: label})
                row: dict[str, Any] = {
                    "docker_host": host,
                    "api_version": client.api.api_version,
                    "requests": bench_requests(registry, client, tag, container, 10, host),
                    "latency": [],
                }
                repos = make_repos(registry, f"bench/e{slug}", max(sizes), f"bench/e{slug}-m", mirror=True)
                for size in sizes:
                    rounds = 5 if size <= 100 else 1
                    ours = bench_latency(
                        registry, proxy, repos[:size], container, concurrency, rounds, docker_host=host
                    )
                    row["latency"].append({"images": size, "dockwarden": ours})
                found[name] = row
                print(name, json.dumps(row))
            finally:
                remove_labelled(client, label)
                factory.cleanup()
                client.close()
    finally:
        proxy.stop()
    return found


def compare(args: argparse.Namespace, sizes: list[int], label: str) -> None:
    """The `--engines` run: (a) and (b) per engine, side by side, into `--out`."""
    engines = [(n, h) for n, _, h in (item.partition("=") for item in args.engines.split(","))]
    workdir = Path(tempfile.mkdtemp(prefix="dockwarden-bench-"))
    registry = start_registry(workdir / "registry")
    try:
        compared = bench_engines(registry, engines, sizes, args.concurrency, label)
    finally:
        registry.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rtt_ms": RTT * 1000, "engines": compared}, indent=2))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", default="bench/results/detect.json")
    parser.add_argument(
        "--engines",
        default="",
        help="NAME=DOCKER_HOST,...: compare these engines side by side instead of the default run",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    logs.configure(open("/dev/null", "w"), level=logging.WARNING)  # noqa: SIM115 -- lives for the run
    label = f"bench-{uuid.uuid4().hex[:8]}"
    if args.engines:
        compare(args, sizes, label)
        return
    client = docker.from_env(version="auto", timeout=300)
    workdir = Path(tempfile.mkdtemp(prefix="dockwarden-bench-"))
    registry = start_registry(workdir / "registry")
    factory = ImageFactory(client, label)
    results: dict[str, Any] = {"rtt_ms": RTT * 1000, "concurrency": args.concurrency}
    try:
        tag = f"{registry.host}/bench/base:latest"
        factory.build_and_push(tag, label)
        name = f"dw-bench-{label}"
        client.containers.run(tag, name=name, detach=True, labels={LABEL: label})
        results["requests"] = bench_requests(registry, client, tag, name, cycles=10)
        print("requests per unchanged image per cycle:", json.dumps(results["requests"], indent=1))

        repos = make_repos(registry, "bench/base", max(sizes))
        proxy = ProxyProcess(registry.host, RTT)
        results["latency"] = []
        for size in sizes:
            rounds = 5 if size <= 100 else 1
            ours = bench_latency(registry, proxy, repos[:size], name, args.concurrency, rounds)
            one_by_one = bench_latency(registry, proxy, repos[:size], name, 1, 1)
            row = {
                "images": size,
                "dockwarden": ours,
                "sequential": one_by_one,
                "speedup": one_by_one["median_s"] / ours["median_s"],
            }
            results["latency"].append(row)
            print(json.dumps(row))
        shared = bench_latency(registry, proxy, repos[:10], name, args.concurrency, 3, services_per_image=10)
        results["shared"] = {"services": 100, "images": 10, **shared}
        print("100 services on 10 images:", json.dumps(results["shared"]))
        proxy.stop()
    finally:
        registry.stop()
        remove_labelled(client, label)
        factory.cleanup()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
