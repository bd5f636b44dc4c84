"""When cycles run: `interval` durations and five-field cron expressions, evaluated in UTC.

APScheduler 3's cron counts day-of-week from Monday (0 = mon), while crontab(5) counts from Sunday
(0 and 7 = sun). Users write crontab, so the day-of-week field is translated to day names before
APScheduler sees it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

_DURATION = re.compile(r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?\Z")
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MIN_INTERVAL = timedelta(seconds=10)
# Every duration in the config (intervals, windows, timeouts, ages) must stay usable as a timedelta and by
# APScheduler, which adds it to today's date (datetime ends in year 9999). A hundred years still lets people
# write "never" (`gc.min_age: 36500d`). Socket timeouts have a lower bound of their own (config).
MAX_DURATION = timedelta(days=36500)
_MAX_DIGITS = 9  # per number: bounds the work of int() on hostile input, and timedelta's own range


class ScheduleError(ValueError):
    """A duration or cron expression that cannot be used; the message says why."""


def parse_duration(text: str) -> timedelta:
    """`90s`, `5m`, `1h30m`, `7d`: days, hours, minutes and seconds, each with its unit, at most
    MAX_DURATION in all. Raises ScheduleError saying why a text is not one."""
    match = _DURATION.match(text.strip()) if text.strip() else None
    if not match or not any(match.groupdict().values()):
        raise ScheduleError(
            f"{text!r} is not a duration: write a number with a unit, like 30s, 5m, 1h, 1h30m or 7d"
        )
    if any(len(v) > _MAX_DIGITS for v in match.groupdict().values() if v):
        raise ScheduleError(f"{text!r} is too long: durations go up to {format_duration(MAX_DURATION)}")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    value = timedelta(
        days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0), seconds=parts.get("s", 0)
    )
    if value > MAX_DURATION:
        raise ScheduleError(f"{text!r} is too long: durations go up to {format_duration(MAX_DURATION)}")
    return value


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (
        (f"{days}d" if days else "")
        + (f"{hours}h" if hours else "")
        + (f"{minutes}m" if minutes else "")
        + (f"{secs}s" if secs else "")
    )
    return text or "0s"


def _day_number(token: str) -> int:
    lowered = token.lower()
    if lowered in _DAY_NAMES:
        return _DAY_NAMES.index(lowered)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ScheduleError(f"day-of-week {token!r} is not 0-7 or a day name (sun..sat)")


def _expand_day_of_week(field: str) -> list[int]:
    days: set[int] = set()
    for item in field.split(","):
        body, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"day-of-week step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            start, end = 0, 6
        elif "-" in body:
            low, high = body.split("-", 1)
            start, end = _day_number(low), _day_number(high)
            if high == "7":
                end = 7  # crontab allows 1-7 to mean Monday through Sunday
            if end < start:
                raise ScheduleError(f"day-of-week range {body!r} runs backwards")
        else:
            start = end = _day_number(body)
            if step_text:
                end = 6
        days.update(day % 7 for day in range(start, end + 1, step))
    return sorted(days)


def cron_trigger(expression: str) -> CronTrigger:
    """A UTC CronTrigger from a five-field crontab expression with crontab's day-of-week numbering."""
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"cron expression {expression!r} has {len(fields)} fields; it needs 5 "
            "(minute hour day-of-month month day-of-week)"
        )
    # Imported here: APScheduler costs a quarter of a second at startup, and only the daemon and cron
    # validation need it; `dockwarden rollback` is timed from the keypress.
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415

    minute, hour, day, month, dow = fields
    day_of_week = "*" if dow == "*" else ",".join(_DAY_NAMES[d] for d in _expand_day_of_week(dow))
    try:
        return CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week, timezone=UTC
        )
    except ValueError as exc:
        raise ScheduleError(f"cron expression {expression!r}: {exc}") from None


def check_interval(every: timedelta) -> timedelta:
    if every < MIN_INTERVAL:
        raise ScheduleError(f"interval {format_duration(every)} is shorter than the minimum of 10s")
    return every


def interval_trigger(every: timedelta, start: datetime | None = None) -> IntervalTrigger:
    from apscheduler.triggers.interval import IntervalTrigger  # noqa: PLC0415 -- see cron_trigger

    check_interval(every)
    return IntervalTrigger(seconds=int(every.total_seconds()), start_date=start, timezone=UTC)


def next_runs(trigger: BaseTrigger, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times strictly after `after`; the schedule math the daemon relies on."""
    runs: list[datetime] = []
    previous: datetime | None = None
    now = after
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        if fire <= after:
            now = fire + timedelta(microseconds=1)
            fire = trigger.get_next_fire_time(previous, now)
            if fire is None:
                break
        runs.append(fire)
        previous, now = fire, fire + timedelta(microseconds=1)
    return runs
