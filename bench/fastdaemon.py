"""A bench entry point: `python -m bench.fastdaemon CONFIG SECONDS` runs `dockwarden run -c CONFIG` with its
check cycle every SECONDS, below the config's minimum interval of 10 s, so that a soak drives hundreds of
upgrades in minutes. Everything else is the shipped daemon: the same command, scheduler, cycle, transaction,
signals and logs; only `daemon.cycle_trigger` is replaced (the shipped command has no such knob)."""

from __future__ import annotations

import sys
from datetime import UTC

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from dockwarden import cli, daemon
from dockwarden import config as configuration


def every(seconds: float) -> None:
    """Make the daemon's cycles (and a reload's) start every `seconds`."""

    def trigger(cfg: configuration.Config) -> BaseTrigger:
        return IntervalTrigger(seconds=seconds, timezone=UTC)

    daemon.cycle_trigger = trigger


if __name__ == "__main__":
    every(float(sys.argv[2]))
    sys.exit(cli.main(["run", "-c", sys.argv[1]]))
