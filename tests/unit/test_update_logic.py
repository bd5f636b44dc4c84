"""Pure decisions of the update cycle: upgrade order, what to do per service, locks and the skip list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dockwarden.check import CheckResult, Status
from dockwarden.config import Service, Stopped, Update
from dockwarden.cycle import Action, Options, blamed, decide, order
from dockwarden.engine import ContainerState, ContainerView
from dockwarden.gate import Cause
from dockwarden.locks import Busy, ContainerLock
from dockwarden.namespace import parents as namespace_parents
from dockwarden.skiplist import SkipList
from dockwarden.upgrade import Outcome, Result, Step

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def _svc(name: str, *depends: str, update: str = "auto") -> Service:
    return Service(name=name, update=Update(update), depends_on=depends)


def _result(
    status: Status, registry_digest: str | None = D2, state: ContainerState | None = None
) -> CheckResult:
    return CheckResult(
        service="web",
        container="web",
        image="r/web:latest",
        running_digest=D1,
        registry_digest=registry_digest,
        status=status,
        error="boom" if status == "error" else None,
        state=state,
    )


def test_order_puts_dependencies_and_namespace_owners_first() -> None:
    """depends_on and network-namespace parents come first; otherwise config order is kept."""
    services = [_svc("web", "db"), _svc("sidecar"), _svc("db"), _svc("proxy")]
    ordered = [s.name for s in order(services, {"sidecar": "proxy"})]
    assert ordered == ["db", "web", "proxy", "sidecar"]


def test_order_ignores_dependencies_outside_the_selection() -> None:
    """`update web` alone does not wait for a db that is not being updated."""
    assert [s.name for s in order([_svc("web", "db")], {})] == ["web"]


@pytest.mark.parametrize(
    ("service", "result", "options", "expected"),
    [
        (_svc("web"), _result(Status.UP_TO_DATE), Options(), Result.UP_TO_DATE),
        (_svc("web"), _result(Status.ERROR), Options(), Result.ERROR),
        (_svc("web"), _result(Status.UPDATE_AVAILABLE), Options(), Action.UPGRADE),
        (_svc("web", update="monitor"), _result(Status.UPDATE_AVAILABLE), Options(), Result.SKIPPED),
        (
            _svc("web", update="monitor"),
            _result(Status.UPDATE_AVAILABLE),
            Options(named=True),
            Action.UPGRADE,
        ),
    ],
)
def test_decide(service: Service, result: CheckResult, options: Options, expected: str) -> None:
    """Only an available update of an auto (or explicitly named) service is upgraded."""
    assert decide(service, result, None, options)[0] == expected


@pytest.mark.parametrize(
    ("service", "result", "expected"),
    [
        (_svc("web"), _result(Status.PINNED, registry_digest=None), "pinned"),
        (_svc("web"), _result(Status.UPDATE_AVAILABLE, state=ContainerState.PAUSED), "paused"),
        (_svc("web"), _result(Status.UPDATE_AVAILABLE, state=ContainerState.EXITED), "exited"),
        (_svc("web"), _result(Status.UPDATE_AVAILABLE, state=ContainerState.CREATED), "created"),
        (_svc("web"), _result(Status.UPDATE_AVAILABLE, state=ContainerState.DEAD), "dead"),
        (
            Service(name="web", stopped=Stopped.RECREATE),
            _result(Status.UPDATE_AVAILABLE, state=ContainerState.EXITED),
            Action.UPGRADE,
        ),
        (_svc("web"), _result(Status.UPDATE_AVAILABLE, state=ContainerState.RESTARTING), Action.UPGRADE),
    ],
)
def test_decide_from_the_containers_state_and_pin(
    service: Service, result: CheckResult, expected: str
) -> None:
    """A pinned service, and a paused, dead or (unless it opts in) stopped container, are skipped, even when
    named and forced, with a reason that starts with that word; a crash loop is upgraded."""
    action, reason = decide(service, result, None, Options(named=True, force=True))
    if expected == Action.UPGRADE:
        assert (action, reason) == (Action.UPGRADE, None)
    else:
        assert action == Result.SKIPPED
        assert str(reason).startswith(f"{expected}: ")


C, E = Cause.CONTAINER, Cause.ENGINE


@pytest.mark.parametrize(
    ("result", "started_new", "cause", "expected"),
    [
        (Result.ROLLED_BACK, True, C, True),
        (Result.ROLLBACK_FAILED, True, C, True),
        (Result.ROLLED_BACK, False, C, False),  # failed at create, verify, stop-old...: the digest never ran
        (Result.ROLLBACK_FAILED, False, C, False),
        (Result.ERROR, False, C, False),
        (Result.UPGRADED, True, None, False),
        (Result.ROLLED_BACK, True, E, False),  # the engine was unreachable, answered 5xx or restarted
        (Result.ROLLBACK_FAILED, True, E, False),
        (Result.ROLLED_BACK, True, Cause.DOCKWARDEN, False),  # stopped (or crashed) before a verdict
    ],
)
def test_only_a_digest_that_ran_and_failed_is_blamed(
    result: Result, started_new: bool, cause: Cause | None, expected: bool
) -> None:
    """The skip list takes a digest only when its container was started and failed through its own doing."""
    outcome = Outcome(
        service="web",
        container="web",
        from_digest=D1,
        to_digest=D2,
        result=result,
        step=Step.GATE,
        started_new=started_new,
        cause=cause,
    )
    assert blamed(outcome) is expected


def test_failed_digest_is_skipped_until_the_tag_moves_or_force(tmp_path: Path) -> None:
    """A digest on the skip list is skipped with its reason; a newer digest or --force is tried."""
    skips = SkipList(tmp_path)
    skips.add("web", [D2], "gate: unhealthy")
    entry = skips.get("web")
    status, reason = decide(_svc("web"), _result(Status.UPDATE_AVAILABLE), entry, Options())
    assert status == Result.SKIPPED
    assert reason is not None
    assert "gate: unhealthy" in reason
    assert "--force" in reason
    assert (
        decide(_svc("web"), _result(Status.UPDATE_AVAILABLE), entry, Options(force=True))[0] == Action.UPGRADE
    )
    moved = _result(Status.UPDATE_AVAILABLE, registry_digest="sha256:" + "3" * 64)
    assert decide(_svc("web"), moved, entry, Options())[0] == Action.UPGRADE
    skips.clear("web")
    assert SkipList(tmp_path).get("web") is None


def test_skip_list_holds_every_digest_of_a_rolled_away_image(tmp_path: Path) -> None:
    """An entry with several digests skips each of them, and survives a new SkipList (a restart)."""
    SkipList(tmp_path).add("web", [D1, D2], "rolled back by hand")
    entry = SkipList(tmp_path).get("web")
    assert entry is not None
    assert entry.digests == (D1, D2)
    for digest in (D1, D2):
        result = _result(Status.UPDATE_AVAILABLE, registry_digest=digest)
        assert decide(_svc("web"), result, entry, Options())[0] == Result.SKIPPED


def test_skip_list_of_the_previous_format_is_read(tmp_path: Path) -> None:
    """A skipped.json written before entries held several digests still skips its digest."""
    (tmp_path / "skipped.json").write_text(json.dumps({"web": {"digest": D2, "reason": "gate", "at": "x"}}))
    entry = SkipList(tmp_path).get("web")
    assert entry is not None
    assert entry.digests == (D2,)


def test_skip_list_of_the_several_digests_format_is_read(tmp_path: Path) -> None:
    """A skipped.json whose entry lists several digests under one reason gives each that reason and time."""
    old = {"web": {"digests": [D1, D2], "reason": "rolled back by hand", "at": "2026-01-01T00:00:00+00:00"}}
    (tmp_path / "skipped.json").write_text(json.dumps(old))
    entry = SkipList(tmp_path).get("web")
    assert entry is not None
    assert [(s.digest, s.reason, s.at) for s in entry.skips] == [
        (D, "rolled back by hand", "2026-01-01T00:00:00+00:00") for D in (D1, D2)
    ]


def test_adding_keeps_the_other_digests_each_with_its_own_reason(tmp_path: Path) -> None:
    """A later add (a manual rollback) adds its digest and never drops those already skipped."""
    D3 = "sha256:" + "3" * 64
    SkipList(tmp_path).add("web", [D2], "gate: unhealthy")
    SkipList(tmp_path).add("web", [D3], "rolled back by hand to D1")
    entry = SkipList(tmp_path).get("web")
    assert entry is not None
    assert entry.digests == (D2, D3)
    skip2, skip3 = entry.find(D2), entry.find(D3)
    assert skip2 is not None
    assert skip3 is not None
    assert (skip2.reason, skip3.reason) == ("gate: unhealthy", "rolled back by hand to D1")
    reason = decide(_svc("web"), _result(Status.UPDATE_AVAILABLE), entry, Options())[1]
    assert reason is not None
    assert "gate: unhealthy" in reason


def test_adding_a_skipped_digest_again_updates_its_reason_only(tmp_path: Path) -> None:
    """Skipping a digest twice keeps one skip for it, with the newer reason, beside the others."""
    skips = SkipList(tmp_path)
    skips.add("web", [D1, D2], "rolled back by hand")
    skips.add("web", [D2], "gate: unhealthy")
    entry = skips.get("web")
    assert entry is not None
    assert [(s.digest, s.reason) for s in entry.skips] == [
        (D1, "rolled back by hand"),
        (D2, "gate: unhealthy"),
    ]
    assert skips.all()["web"].to_json()["reason"] == "gate: unhealthy"  # the newest one


def test_unreadable_skip_list_is_ignored(tmp_path: Path) -> None:
    """A corrupt skipped.json means no skips (a warning), never a crash."""
    (tmp_path / "skipped.json").write_text("{not json")
    assert SkipList(tmp_path).get("web") is None


def test_lock_excludes_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    """While one process holds a container's lock, another gets Busy with the holder's PID."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from dockwarden.locks import ContainerLock;"
            "lock = ContainerLock(Path(sys.argv[1]), 'web'); lock.acquire(); print('held', flush=True);"
            "time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=f"pid {holder.pid}"):
            ContainerLock(tmp_path, "web").acquire()
    finally:
        holder.kill()
        holder.wait()
    with ContainerLock(tmp_path, "web") as lock:  # the kernel released the dead holder's lock
        assert lock.holder() == os.getpid()


def test_unwritable_state_dir_keeps_the_skip_entry_in_memory_with_a_warning(tmp_path: Path) -> None:
    """If state_dir cannot be written, adding to the skip list warns instead of raising, and the same
    SkipList still skips the digest."""
    blocked = tmp_path / "file"
    blocked.write_text("")
    skips = SkipList(blocked / "state")
    with capture_logs() as logs:
        skips.add("web", [D2], "gate: unhealthy")
    assert "state.unwritable" in [e["event"] for e in logs]
    entry = skips.get("web")
    assert entry is not None
    assert entry.digests == (D2,)


def test_namespace_parents_by_name_or_id() -> None:
    """A service whose container joins another watched container's namespace, by name or by ID, has
    that service as its parent; unwatched owners and ordinary modes give none."""
    services = [_svc("web"), _svc("side"), _svc("side2"), _svc("alone")]
    inspected = {
        "web": {"Id": "a" * 64, "HostConfig": {"NetworkMode": "bridge"}},
        "side": {"Id": "b" * 64, "HostConfig": {"NetworkMode": "container:" + "a" * 64}},
        "side2": {"Id": "c" * 64, "HostConfig": {"NetworkMode": "container:web"}},
        "alone": {"Id": "d" * 64, "HostConfig": {"NetworkMode": "container:unwatched"}},
    }
    views = {name: ContainerView.from_inspect(data) for name, data in inspected.items()}
    assert namespace_parents(services, views) == {"side": "web", "side2": "web"}
