"""`dockwarden rollback`: switch a service back to a version kept on this host, never pulling.

The same transaction as an upgrade (`Runner`), gated the same way; the target is chosen from the retained
versions (`retention.choose`) once the service's lock is held and any half-done upgrade is resolved.
The digests the service leaves go on the skip list, so that the daemon does not upgrade straight back.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from dockwarden import gate, imageref, recovery, retention, upgrade
from dockwarden.config import Config, Service
from dockwarden.engine import EngineError
from dockwarden.history import Event
from dockwarden.runner import Runner
from dockwarden.upgrade import Outcome, Result, Target


def parse_digest(text: str) -> str:
    """`sha256:HEX` from a manifest digest or image ID given as `sha256:HEX` or bare HEX, at least 12
    digits. Raises ValueError, naming the text, for anything else."""
    value = text.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{12,64}", value):
        raise ValueError(f"{text!r} is not a digest (sha256:<hex>, at least 12 hex digits)")
    return f"sha256:{value}"


def rollback(runner: Runner, cfg: Config, service: Service, to: str | None) -> Outcome:
    """Roll `service` back to `to` (a manifest digest or image ID; None: the newest retained version
    older than the running one) and record it in the history. The result is REVERTED on success, and as
    for an upgrade otherwise (UP_TO_DATE when `to` is what runs; ERROR when there is nothing to go to)."""
    work = functools.partial(_locked, runner, cfg, service, to)
    outcome = runner.locked(service.name, service.container, work, (None, None))
    runner.record(outcome, Event.ROLLBACK)
    return outcome


def _error(service: Service, message: str, from_digest: str | None = None) -> Outcome:
    return Outcome(
        service=service.name,
        container=service.container,
        from_digest=from_digest,
        to_digest=None,
        result=Result.ERROR,
        error=message,
    )


def _locked(runner: Runner, cfg: Config, service: Service, to: str | None) -> Outcome:
    policy = gate.policy_for(service, cfg.health_timeout_max)
    # A half-done upgrade first, if it is provably ours.
    records = recovery.recorded(runner.state_dir, [service.container])
    upgrade.converge(runner.engine, service.container, policy, records.get(service.container))
    try:
        container = runner.engine.container_view(service.container)
        images = runner.engine.images()
        ref = service.image or imageref.parse(container.config_image)
    except (EngineError, imageref.InvalidReference) as exc:
        return _error(service, str(exc))
    if service.image is None and ref.digest is not None:
        # As for the update cycle (check.Status.PINNED): the digest is the version chosen for it.
        return _error(
            service, f"{ref} is pinned to a digest; set `image:` for {service.name} to follow a tag"
        )
    ref = ref.with_tag_default()
    running = container.image_id
    running_digests = retention.digests_of(images, running, ref.name)
    from_digest = running_digests[0] if running_digests else None
    known = retention.versions(images, service.container)
    try:
        image_id, digest = retention.choose(known, running, images, ref.name, to)
    except retention.AlreadyRunning as exc:
        return dataclasses.replace(_error(service, str(exc), from_digest), result=Result.UP_TO_DATE)
    except LookupError as exc:
        kept = ", ".join(
            f"{(v.digests or (v.image_id,))[0][:19]} ({v.retired_at:%Y-%m-%d %H:%M}Z)" for v in known
        )
        return _error(service, f"{exc}; versions kept for {service.name}: {kept or 'none'}", from_digest)
    target = Target(
        service=service.name,
        container=service.container,
        ref=ref,
        from_digest=from_digest,
        to_digest=digest,
        policy=policy,
        image_id=image_id,
        stopped_ok=True,
        strategy=service.strategy,
        drain=service.drain.total_seconds(),
    )
    outcome = runner.transact(target, service.keep_previous)
    if not outcome.switched:
        return outcome
    if running_digests:
        # So that the daemon does not upgrade straight back to what was just rolled away from.
        reason = f"rolled back by hand to {digest or image_id[:19]}"
        runner.skips.add(service.name, running_digests, reason)
    return dataclasses.replace(outcome, result=Result.REVERTED)
