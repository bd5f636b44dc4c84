"""What 100 upgrades leave on disk (issue 4): dockwarden against the post's six-command script.

One service, upgraded CYCLES times, each time to a new image (a distinct random layer of PAYLOAD bytes),
by (a) dockwarden's update cycle (keep_previous 2) and (b) the post's script (docker pull, stop, rm, rmi
:current, tag latest current, run), over the same images from the same registry on 127.0.0.1, one side
after the other with the repository's images removed in between. Both start the way a user starts: a
plain `docker run` of the first version. Counted after the last cycle: images of the repository on disk,
dangling images, stopped containers, and the bytes the repository's image layers take (the engine's disk
usage, minus what was there before the side started).

Then, with the registry stopped: dockwarden's `rollback` to the previous version, timed from the command's
start to the previous version answering on the published port, next to the app's own start time (docker
start -> first answer); and the script's only way back, pulling the previous digest, which fails.

Run as root from the repository root:  .venv/bin/python -m bench.retention [--cycles 100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
from tests.support.images import LABEL, ImageFactory, remove_labelled
from tests.support.registry import MANIFEST_V2, Registry, start_registry

from bench.downtime import HANDLES_TERM, Load, _free_port, _run_app, script_upgrade
from dockwarden import check, cycle
from dockwarden import config as configuration
from dockwarden.history import History
from dockwarden.runner import Runner

PAYLOAD = 256 * 1024
REPO = "bench-retention"


def publish(registry: Registry, version: int) -> str:
    """Point `latest` at version N in the registry, as a CI push would; returns its digest."""
    body, digest = registry.get_manifest(REPO, f"v{version}")
    registry.put_manifest(REPO, "latest", body, MANIFEST_V2)
    return digest


def on_disk(client: docker.DockerClient, repo: str) -> dict[str, Any]:
    images = client.api.images()
    mine = [
        i
        for i in images
        if any(r.startswith(repo + ":") for r in i.get("RepoTags") or ())
        or any(r.startswith(repo + "@") for r in i.get("RepoDigests") or ())
    ]
    dangling = client.api.images(filters={"dangling": True})
    stopped = client.api.containers(all=True, filters={"status": "exited"})
    return {
        "images": len(mine),
        "dangling": len(dangling),
        "stopped_containers": len(stopped),
        "layers_bytes": int(client.api.df().get("LayersSize") or 0),
    }


def drop_repo_images(client: docker.DockerClient, repo: str) -> None:
    for image in client.api.images():
        refs = (image.get("RepoTags") or []) + (image.get("RepoDigests") or [])
        if any(r.startswith((repo + ":", repo + "@")) for r in refs):
            client.api.remove_image(image["Id"], force=True)


def dockwarden_side(
    client: docker.DockerClient, registry: Registry, cycles: int, run_label: str, work: Path
) -> dict[str, Any]:
    repo = f"{registry.host}/{REPO}"
    name, port = f"dw-bench-ret-{uuid.uuid4().hex[:6]}", _free_port()
    publish(registry, 0)
    _run_app(f"{repo}:latest", name, port, run_label)
    cfg_path = work / "dockwarden.yaml"
    cfg_path.write_text(
        f"state_dir: {work / 'state'}\nstability_window: 1s\nkeep_previous: 2\n"
        f"services:\n  web: {{container: {name}, image: '{repo}:latest'}}\n"
    )
    cfg = configuration.load(cfg_path)
    started = time.monotonic()
    with check.connect(cfg) as checker:
        runner = Runner(checker.engine, cfg.state_dir, History.of(cfg))
        for version in range(1, cycles + 1):
            publish(registry, version)
            report = cycle.run(checker, runner, cfg, cfg.services, cycle.Options())
            if [o.result for o in report.outcomes] != ["upgraded"]:
                raise RuntimeError(f"cycle {version}: {report.outcomes}")
    result: dict[str, Any] = {"seconds": time.monotonic() - started, "name": name, "port": port}
    result["cfg"] = cfg_path
    return result


def script_side(
    client: docker.DockerClient, registry: Registry, cycles: int, run_label: str
) -> dict[str, Any]:
    repo = f"{registry.host}/{REPO}"
    name, port = f"dw-bench-ret-{uuid.uuid4().hex[:6]}", _free_port()
    publish(registry, 0)
    _run_app(f"{repo}:latest", name, port, run_label)
    started = time.monotonic()
    for version in range(1, cycles + 1):
        publish(registry, version)
        script_upgrade(f"{repo}:latest", name, port, run_label)
    return {"seconds": time.monotonic() - started, "name": name, "port": port}


def app_start(client: docker.DockerClient, name: str, port: int, marker: str) -> float:
    container = client.containers.get(name)
    container.stop(timeout=10)
    with Load(port) as load:
        t0 = time.time()
        container.start()
        return load.wait_for(marker) - t0


def timed_rollback(cfg: Path, port: int, marker: str, *extra: str) -> dict[str, float]:
    """`dockwarden rollback` from the keypress to `marker` answering; also when its first log line came."""
    with Load(port) as load:
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "dockwarden", "rollback", "-c", str(cfg), "web", "--json", *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        answered = load.wait_for(marker, after=t0) - t0
        finished = time.time() - t0
    if json.loads(proc.stdout)[0]["result"] != "reverted":
        raise RuntimeError(proc.stdout + proc.stderr[-3000:])
    first = json.loads(next(line for line in proc.stderr.splitlines() if line.startswith("{")))
    started = datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).timestamp() - t0
    return {"answering_s": answered, "first_log_s": started, "command_s": finished}


def rollbacks(client: docker.DockerClient, dw: dict[str, Any], cycles: int) -> dict[str, Any]:
    """Three rollbacks with the registry down (back, forward by digest, back) and three app starts."""
    newest = f"ret-v{cycles}"
    previous = f"ret-v{cycles - 1}"
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "dockwarden", "status", "-c", str(dw["cfg"]), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )[0]
    newest_digest = status["running_digest"]
    runs = [timed_rollback(dw["cfg"], dw["port"], previous)]
    runs.append(timed_rollback(dw["cfg"], dw["port"], newest, "--to", newest_digest))
    runs.append(timed_rollback(dw["cfg"], dw["port"], previous))
    starts = [app_start(client, dw["name"], dw["port"], previous) for _ in range(3)]
    return {
        "answering_s": statistics.median(r["answering_s"] for r in runs),
        "first_log_s": statistics.median(r["first_log_s"] for r in runs),
        "app_start_s": statistics.median(starts),
        "all": runs,
        "app_starts": starts,
    }


def main() -> None:  # noqa: PLR0915 -- one measured story, top to bottom
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--out", default="bench/results/retention.json")
    args = parser.parse_args()
    client = docker.from_env(version="auto", timeout=120)
    run_label = f"bench-{uuid.uuid4().hex[:8]}"
    images = ImageFactory(client, run_label)
    work = Path(tempfile.mkdtemp(prefix="dockwarden-bench-"))
    registry = start_registry(work / "registry")
    repo = f"{registry.host}/{REPO}"
    results: dict[str, Any] = {"cycles": args.cycles, "payload_bytes": PAYLOAD}
    # An installed dockwarden has its bytecode compiled by pip; this checkout is an editable install, and
    # a machine with PYTHONDONTWRITEBYTECODE would recompile it at every command's start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "daemon/dockwarden"], check=True)
    try:
        print(f"building and pushing {args.cycles + 1} images", file=sys.stderr)
        for version in range(args.cycles + 1):
            images.build(f"{repo}:v{version}", f"ret-v{version}", cmd=HANDLES_TERM, payload=PAYLOAD)
            images.push(f"{repo}:v{version}")
        drop_repo_images(client, repo)  # so that every cycle really pulls, as on a server
        baseline = on_disk(client, repo)
        results["baseline"] = baseline

        print("dockwarden side", file=sys.stderr)
        dw = dockwarden_side(client, registry, args.cycles, run_label, work)
        after = on_disk(client, repo)
        after["layers_bytes"] -= baseline["layers_bytes"]
        after["dangling"] -= baseline["dangling"]
        after["stopped_containers"] -= baseline["stopped_containers"]
        results["dockwarden"] = {**after, "seconds": dw["seconds"]}
        # Rollbacks with the registry down: back to the previous version, forward again, back again.
        registry.stop()
        results["dockwarden"]["rollback"] = rollbacks(client, dw, args.cycles)
        registry.start()
        client.containers.get(dw["name"]).remove(force=True)
        drop_repo_images(client, repo)
        print("dockwarden", json.dumps(results["dockwarden"]), file=sys.stderr)

        print("script side", file=sys.stderr)
        base2 = on_disk(client, repo)
        sc = script_side(client, registry, args.cycles, run_label)
        after = on_disk(client, repo)
        after["layers_bytes"] -= base2["layers_bytes"]
        after["dangling"] -= base2["dangling"]
        after["stopped_containers"] -= base2["stopped_containers"]
        results["script"] = {**after, "seconds": sc["seconds"]}
        previous = registry.get_manifest(REPO, f"v{args.cycles - 1}")[1]
        registry.stop()
        pulled = subprocess.run(
            ["docker", "pull", f"{repo}@{previous}"], capture_output=True, text=True, check=False
        )
        results["script"]["rollback"] = {
            "possible": pulled.returncode == 0,
            "why": "the script removed the previous image; with the registry down it cannot be pulled: "
            + pulled.stderr.strip()[-200:],
        }
        registry.start()
        client.containers.get(sc["name"]).remove(force=True)
        print("script", json.dumps(results["script"]), file=sys.stderr)
        results["bytes_ratio"] = results["dockwarden"]["layers_bytes"] / max(
            1, results["script"]["layers_bytes"]
        )
    finally:
        for item in client.api.containers(all=True, filters={"label": f"{LABEL}={run_label}"}):
            client.api.remove_container(item["Id"], force=True)
        drop_repo_images(client, repo)
        remove_labelled(client, run_label)
        registry.stop()
        images.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
