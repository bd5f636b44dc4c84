"""What a process uses, read from /proc/PID (Linux `proc(5)`): resident memory, CPU ticks, open file
descriptors and threads. Shared by the soak and idle benchmarks, which watch a daemon in its own process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, kw_only=True)
class Usage:
    rss_kib: int  # VmRSS, kibibytes
    cpu_ticks: int  # utime + stime, in TICKS_PER_SECOND units
    fds: int  # entries in /proc/PID/fd
    threads: int

    @property
    def rss_mb(self) -> float:
        return round(self.rss_kib / 1024, 1)


def usage(pid: int) -> Usage:
    """The process's current usage; raises OSError (FileNotFoundError) once it has exited."""
    proc = Path(f"/proc/{pid}")
    status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
    # Fields 14 and 15 of /proc/PID/stat (utime, stime); the command name in field 2 may hold spaces, so
    # count from the closing parenthesis.
    after_name = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    return Usage(
        rss_kib=int(status["VmRSS"].split()[0]),
        cpu_ticks=int(after_name[11]) + int(after_name[12]),
        fds=len(os.listdir(proc / "fd")),
        threads=int(status["Threads"]),
    )
