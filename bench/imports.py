"""Where the idle daemon's memory goes at import (issue 12): resident memory after each group of imports.

Each round is a fresh interpreter that runs the groups below in order and reads its VmRSS after each
(/proc/self/status), so a group's figure is what it adds over everything before it (what it shares with an
earlier group is the earlier group's). The groups follow what `dockwarden run` imports: the libraries first,
heaviest shared dependencies first, then dockwarden's own modules, and last the modules only the other
commands use (`report`, `status`, `rollback`), which is what deferring them would save. Medians of ROUNDS.

Run from the repository root:  .venv/bin/python -m bench.imports [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

GROUPS: list[tuple[str, str]] = [
    ("ssl (urllib3, docker-py)", "import ssl"),
    ("asyncio (structlog.stdlib imports it)", "import asyncio"),
    ("structlog", "import structlog"),
    ("PyYAML", "import yaml"),
    ("pydantic", "import pydantic"),
    ("urllib3", "import urllib3"),
    ("requests (charset_normalizer, idna)", "import requests"),
    ("docker-py", "import docker"),
    ("APScheduler's BackgroundScheduler", "import apscheduler.schedulers.background"),
    # pydantic loads its schema builder when the first model class is made: any model pays it.
    ("pydantic's model builder (a one-field model)", "class M(pydantic.BaseModel):\n    x: int = 0"),
    ("dockwarden.config (its models)", "import dockwarden.config"),
    ("dockwarden's modules that `run` uses", "import dockwarden.check, dockwarden.logs, dockwarden.daemon"),
    ("argparse and the rest `run` needs", "import argparse, dockwarden.notify, dockwarden.statefiles"),
    ("modules only other commands use", "import dockwarden.report, dockwarden.status, dockwarden.rollback"),
    ("dockwarden.cli itself", "import dockwarden.cli"),
]

PROBE = """
import json, re, sys
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
out = [rss()]
for code in json.loads(sys.argv[1]):
    exec(code)
    out.append(rss())
print(json.dumps(out))
"""


def one_round() -> list[int]:
    """VmRSS in KiB: before any group, then after each."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([code for _, code in GROUPS])],
        check=True,
        capture_output=True,
        text=True,
    )
    return list(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="bench/results/imports.json")
    args = parser.parse_args()
    rounds = [one_round() for _ in range(args.rounds)]
    medians = [statistics.median(r[i] for r in rounds) for i in range(len(GROUPS) + 1)]
    rows = [
        {
            "group": "python itself",
            "adds_mb": round(medians[0] / 1024, 1),
            "total_mb": round(medians[0] / 1024, 1),
        }
    ]
    for i, (label, _code) in enumerate(GROUPS, start=1):
        rows.append(
            {
                "group": label,
                "adds_mb": round((medians[i] - medians[i - 1]) / 1024, 1),
                "total_mb": round(medians[i] / 1024, 1),
            }
        )
    for row in rows:
        print(f"{row['group']:48} +{row['adds_mb']:5.1f}  {row['total_mb']:5.1f} MB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": args.rounds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
