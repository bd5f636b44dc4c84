"""The soak and idle benchmarks' helpers: what they read from /proc, the daemon's log, merged configs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from bench import idle, procstat, soak


def test_usage_counts_this_process_threads_descriptors_and_cpu() -> None:
    """`procstat.usage` sees a thread and a file descriptor more when this process opens them, and CPU ticks
    that only grow."""
    before = procstat.usage(os.getpid())
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    read_end, write_end = os.pipe()
    try:
        during = procstat.usage(os.getpid())
        sum(i * i for i in range(2_000_000))  # some CPU, at least a tick's worth
        after = procstat.usage(os.getpid())
    finally:
        stop.set()
        thread.join()
        os.close(read_end)
        os.close(write_end)
    assert during.threads == before.threads + 1
    assert during.fds == before.fds + 2
    assert after.cpu_ticks > before.cpu_ticks
    assert 1024 < before.rss_kib < 4 * 1024 * 1024  # VmRSS in KiB: more than 1 MiB, less than 4 GiB
    assert before.rss_mb == round(before.rss_kib / 1024, 1)


def test_usage_of_an_exited_process_raises_file_not_found() -> None:
    """A process that has exited and been reaped has no /proc entry: `usage` raises FileNotFoundError,
    not garbage."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(FileNotFoundError):
        procstat.usage(child.pid)


def test_extra_config_merges_nested_mappings_key_by_key() -> None:
    """`--extra-config` sets its keys over the generated config, merging nested mappings instead of
    replacing them, and leaves the generated keys it does not name."""
    base = {
        "interval": "10s",
        "gc": {"enabled": False, "min_age": "1h"},
        "services": {"a": {"container": "x"}},
    }
    extra = {"gc": {"min_age": "2h"}, "api": {"listen": "127.0.0.1:9000"}, "interval": "30s"}
    assert idle.merged(base, extra) == {
        "interval": "30s",
        "gc": {"enabled": False, "min_age": "2h"},
        "services": {"a": {"container": "x"}},
        "api": {"listen": "127.0.0.1:9000"},
    }
    assert base["gc"] == {"enabled": False, "min_age": "1h"}  # the generated config is not changed


def test_soak_log_reader_returns_each_complete_line_once(tmp_path: Path) -> None:
    """The soak reads the daemon's JSON log on from where it stopped, keeping a half-written line for the
    next read and skipping lines that are not JSON objects."""
    path = tmp_path / "daemon.log"
    path.write_bytes(b'{"event": "cycle.started"}\nnot json\n{"event": "upgrade.')
    log = soak.Log(path)
    assert [e["event"] for e in log.new_events()] == ["cycle.started"]
    with path.open("ab") as out:
        out.write(b'finished"}\n')
    assert [e["event"] for e in log.new_events()] == ["upgrade.finished"]
    assert log.new_events() == []


def test_soak_log_wait_raises_on_a_crash_event(tmp_path: Path) -> None:
    """Waiting for an outcome fails at once, naming the event, when the daemon logs a crash or a failed
    rollback instead."""
    path = tmp_path / "daemon.log"
    path.write_text('{"event": "cycle.started"}\n{"event": "rollback.failed", "error": "boom"}\n')
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(RuntimeError, match=r"rollback\.failed"):
            soak.Log(path).wait_for({"upgrade.finished"}, timeout=5, proc=proc)
    finally:
        proc.kill()
        proc.wait()
