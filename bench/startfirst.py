"""Start-first against stop-first behind a real reverse proxy (issue 14), on Engine 20.10 and a registry on
127.0.0.1.

One service on a user-defined network under the alias `app` (busybox httpd serving its version marker, with
a graceful SIGTERM: listener closed, requests in flight finished, exit), no published port. In front of it
Debian 12's nginx (tests/support/nginx.py: resolves `app` every second through Docker's DNS, retries a
refused, reset or slow connect on the next address), published on 127.0.0.1. Two clients run throughout:
one on the host going through nginx (10 ms apart), one inside the network without a proxy (busybox,
resolving `app` on every request, 50 ms apart). For each strategy, UPGRADES upgrades in a row, then
ROLLBACKS upgrades to an image that exits at once (rolled back); counted: failed requests of each client,
per switch, and for the rollbacks the longest gap between two answers through the proxy and the undo's own
duration (`rollback.finished`).

Run as root from the repository root:  .venv/bin/python -m bench.startfirst [--upgrades 50] [--rollbacks 5]
(the lab must have unpacked nginx: scripts/lab.sh up).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
from tests.support.images import LABEL, ImageFactory, remove_labelled
from tests.support.nginx import HostClient, NetworkClient, build_nginx
from tests.support.registry import Registry, free_port, start_registry

GRACEFUL = ["sh", "-c", "httpd -f -p 8080 -h /www & pid=$!; trap 'kill $pid; sleep 0.5; exit 0' TERM; wait"]
ALIAS = "app"
DRAIN = "2s"  # longer than nginx's DNS validity (1 s), so it has resolved the new address before the stop


def _update(cfg: Path) -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "dockwarden", "update", "-c", str(cfg), "web"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]


def _config(work: Path, strategy: str, name: str) -> Path:
    path = work / f"{strategy}.yaml"
    path.write_text(
        f"state_dir: {work / ('state-' + strategy)}\nstability_window: 1s\nservices:\n"
        f"  web: {{container: {name}, strategy: {strategy}, drain: {DRAIN}}}\n"
    )
    return path


class Lab:
    """The service, the proxy and the two clients, on one network; everything labelled for removal."""

    def __init__(self, client: docker.DockerClient, registry: Registry, run_label: str) -> None:
        self.client, self.registry, self.run_label = client, registry, run_label
        self.images = ImageFactory(client, run_label)
        self.prefix = f"dw-bench-sf-{uuid.uuid4().hex[:6]}"
        self.repo = f"{registry.host}/{self.prefix}"
        self.network = client.networks.create(self.prefix, labels={LABEL: run_label}).name
        self.name = f"{self.prefix}-web"
        self.port = 0  # nginx's published port, once started
        self.inside: NetworkClient | None = None
        self.current = "v0"  # the marker the service serves

    def version(self, marker: str, cmd: list[str] = GRACEFUL) -> str:
        tag = f"{self.repo}:latest"
        self.images.build(tag, marker, cmd=cmd)
        self.images.push(tag)
        return tag

    def start(self) -> NetworkClient:
        tag = self.version("v0")
        api = self.client.api
        created = api.create_container(
            tag,
            name=self.name,
            labels={LABEL: self.run_label},
            host_config=api.create_host_config(network_mode=self.network),
            networking_config=api.create_networking_config(
                {self.network: api.create_endpoint_config(aliases=[ALIAS])}
            ),
        )
        api.start(created["Id"])
        build_nginx(self.client, f"{self.prefix}-proxy:1", ALIAS, self.run_label)
        self.port = free_port()
        self.client.containers.run(
            f"{self.prefix}-proxy:1",
            name=f"{self.prefix}-proxy",
            network=self.network,
            ports={"8080/tcp": ("127.0.0.1", self.port)},
            detach=True,
            labels={LABEL: self.run_label},
        )
        inside = NetworkClient(self.client, tag, self.network, ALIAS, f"{self.prefix}-client", self.run_label)
        inside.wait_for("v0")
        self.inside = inside
        return inside

    def close(self) -> None:
        remove_labelled(self.client, self.run_label)
        self.client.networks.get(self.network).remove()
        self.images.cleanup()


def _gap(stamps: list[float], since: float) -> float:
    after = [t for t in stamps if t >= since]
    return max((b - a for a, b in itertools.pairwise(after)), default=0.0)


def run_strategy(lab: Lab, strategy: str, upgrades: int, rollbacks: int, work: Path) -> dict[str, object]:
    cfg = _config(work, strategy, lab.name)
    inside = lab.start()
    results: dict[str, object] = {}
    with HostClient(lab.port) as proxy:
        proxy.wait_for(lab.current)
        inside_before, proxy_before = inside.failures(), len(proxy.failed)
        for i in range(upgrades):
            marker = f"{strategy}-{i}"
            lab.version(marker)
            events = _update(cfg)
            if not any(e.get("event") == "upgrade.finished" for e in events):
                raise RuntimeError(f"{strategy} upgrade {i} did not finish: {events[-3:]}")
            proxy.wait_for(marker)
            inside.wait_for(marker)
            lab.current = marker
        results["upgrades"] = upgrades
        results["proxy_failed"] = len(proxy.failed) - proxy_before
        results["inside_failed"] = inside.failures() - inside_before
        results["proxy_failed_per_switch"] = results["proxy_failed"] / upgrades  # type: ignore[operator]
        results["inside_failed_per_switch"] = results["inside_failed"] / upgrades  # type: ignore[operator]
        results["proxy_errors"] = sorted(set(proxy.failed[proxy_before:]))[:5]
        rolled: list[dict[str, float]] = []
        for _ in range(rollbacks):
            inside_before, proxy_before = inside.failures(), len(proxy.failed)
            lab.version(f"{strategy}-bad", cmd=["false"])
            since = time.monotonic()
            events = _update(cfg)
            finished = next((e for e in events if e.get("event") == "rollback.finished"), None)
            if finished is None:
                raise RuntimeError(f"{strategy}: the bad image was not rolled back: {events[-3:]}")
            proxy.wait_for(lab.current)
            time.sleep(0.5)
            rolled.append(
                {
                    "proxy_failed": len(proxy.failed) - proxy_before,
                    "inside_failed": inside.failures() - inside_before,
                    "longest_gap_through_proxy_s": _gap(proxy.stamps, since),
                    "undo_ms": float(finished["duration_ms"]),  # type: ignore[arg-type]
                }
            )
        results["rollbacks"] = rolled
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upgrades", type=int, default=50)
    parser.add_argument("--rollbacks", type=int, default=5)
    parser.add_argument("--out", default="bench/results/startfirst.json")
    args = parser.parse_args()
    client = docker.from_env(version="auto", timeout=120)
    run_label = f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="dockwarden-bench-"))
    registry = start_registry(work / "registry")
    results: dict[str, object] = {"upgrades": args.upgrades, "rollbacks": args.rollbacks, "drain": DRAIN}
    try:
        for strategy in ("start-first", "stop-first"):
            lab = Lab(client, registry, f"{run_label}-{strategy}")
            try:
                results[strategy] = run_strategy(lab, strategy, args.upgrades, args.rollbacks, work)
                print(strategy, json.dumps(results[strategy]), flush=True)
            finally:
                lab.close()
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    os.sync()


if __name__ == "__main__":
    main()
