"""What notifications cost the daemon (issue 13): idle memory and CPU with `notify:` against without it,
and the time one message takes to reach a JSON webhook on 127.0.0.1.

(a) `dockwarden run` on the real engine with SERVICES watched services (containers that do not exist, so
    its one cycle in the window checks them and reports an error each without asking a registry: with
    `notify:`, one message of SERVICES lines goes to the webhook), started once without
    `notify:` (the baseline) and once with it, alternately, ROUNDS times. After its first cycle and
    SETTLE seconds, the daemon's resident memory (VmRSS) and the CPU it uses over IDLE seconds, from /proc.
(b) `notifications.deliver` of a message to a `json://` webhook on 127.0.0.1 (tests/support/receivers),
    COUNT times: the median wall time and CPU of the sender child (`delivery`, which loads Apprise each
    time), and the largest resident size a child reached.

Run as root from the repository root:  .venv/bin/python -m bench.notify_cost [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.support.receivers import JsonWebhook

from dockwarden import notifications
from dockwarden.config import Notify

SERVICES = 100
SETTLE = 3.0
IDLE = 10.0
COUNT = 10
RESULTS = Path(__file__).parent / "results" / "notify_cost.json"


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _config(folder: Path, notify_url: str | None) -> Path:
    lines = ["interval: 1h", f"state_dir: {folder / 'state'}", "gc: {enabled: false}"]
    if notify_url is not None:
        lines += ["notify:", f"  urls: [{json.dumps(notify_url)}]"]
    lines.append("services:")
    lines += [f"  s{i}: {{container: dw-bench-missing-{i}}}" for i in range(SERVICES)]
    path = folder / ("with.yaml" if notify_url else "without.yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def _idle(cfg: Path, log: Path) -> dict[str, float]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dockwarden", "run", "-c", str(cfg)], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while '"update.cycle_finished"' not in log.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"no cycle finished: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(SETTLE)
        cpu0 = _cpu(proc.pid)
        time.sleep(IDLE)
        return {"rss_mib": _rss_mib(proc.pid), "idle_cpu_s": _cpu(proc.pid) - cpu0}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def bench_idle(rounds: int, url: str) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory(prefix="dw-bench-notify-") as tmp:
        folder = Path(tmp)
        for _ in range(rounds):
            for side, notify_url in (("without", None), ("with", url)):
                runs[side].append(_idle(_config(folder, notify_url), folder / f"{side}.log"))
    summary = {
        side: {key: statistics.median(r[key] for r in found) for key in ("rss_mib", "idle_cpu_s")}
        for side, found in runs.items()
    }
    summary["rss_ratio"] = {"with/without": summary["with"]["rss_mib"] / summary["without"]["rss_mib"]}
    return {"runs": runs, "median": summary}


def bench_delivery(hook: JsonWebhook, count: int) -> dict[str, float]:
    notify = Notify(urls=(hook.url(),), timeout=timedelta(seconds=10))
    message = notifications.Message(title="bench", body="web: upgraded a → b")
    times = []
    cpu = []
    for _ in range(count):
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert notifications.deliver(notify, message)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(time.perf_counter() - start)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {
        "median_wall_s": statistics.median(times),
        "median_sender_cpu_s": statistics.median(cpu),
        "sender_maxrss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "received": len(hook.received),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    hook = JsonWebhook()
    try:
        result: dict[str, Any] = {"services": SERVICES, "settle_s": SETTLE, "idle_window_s": IDLE}
        # Deliveries first: RUSAGE_CHILDREN's maxrss is the largest of every child so far.
        result["delivery"] = bench_delivery(hook, COUNT)
        result["idle"] = bench_idle(args.rounds, hook.url())
    finally:
        hook.stop()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({"idle": result["idle"]["median"], "delivery": result["delivery"]}, indent=2))


if __name__ == "__main__":
    main()
