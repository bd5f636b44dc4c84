"""A test entry point: `python -m tests.support.paused STEP ARGS...` runs `dockwarden ARGS...` with the
transaction parked before STEP (a step of the upgrade, or of its undo), so a test can kill it there."""

from __future__ import annotations

import sys
import time

from dockwarden import cli
from dockwarden.upgrade import Checkpoint


def pause_before(step: str) -> Checkpoint:
    """A checkpoint that announces on stderr, then sleeps for good, when the transaction reaches `step`."""

    def pause(current: str) -> None:
        if current == step:
            print(f"dockwarden: paused before {step}", file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)

    return pause


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[2:], checkpoint=pause_before(sys.argv[1])))
