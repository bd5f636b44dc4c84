"""Schedule math: durations, crontab day-of-week numbering in UTC, and the next fire times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dockwarden import schedule

SATURDAY = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1h0m5s", timedelta(hours=1, seconds=5)),
        ("7d", timedelta(days=7)),
        ("1d12h", timedelta(days=1, hours=12)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    """Durations are days, hours, minutes and seconds with units, and format back to themselves."""
    assert schedule.parse_duration(text) == expected
    assert schedule.parse_duration(schedule.format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "5", "5x", "m", "1.5m", "5m1h", "-5m", "1h2d"])
def test_bad_durations(text: str) -> None:
    """Anything but number-with-unit is rejected."""
    with pytest.raises(schedule.ScheduleError):
        schedule.parse_duration(text)


@pytest.mark.parametrize(
    ("expression", "weekdays"),
    [
        ("0 4 * * 0", {6}),  # crontab 0 is Sunday; Python's weekday() says 6
        ("0 4 * * 7", {6}),
        ("0 4 * * sun", {6}),
        ("0 4 * * 1-5", {0, 1, 2, 3, 4}),
        ("0 4 * * 5-7", {4, 5, 6}),
        ("0 4 * * */2", {6, 1, 3, 5}),  # Sun, Tue, Thu, Sat
        ("0 4 * * 1,3", {0, 2}),
        ("0 4 * * *", {0, 1, 2, 3, 4, 5, 6}),
    ],
)
def test_cron_day_of_week_follows_crontab(expression: str, weekdays: set[int]) -> None:
    """Day-of-week counts from Sunday as in crontab(5), not from Monday as APScheduler 3 does."""
    runs = schedule.next_runs(schedule.cron_trigger(expression), SATURDAY, 14)
    assert {run.weekday() for run in runs} == weekdays
    assert all((run.hour, run.minute, run.tzinfo) == (4, 0, UTC) for run in runs)


def test_cron_next_runs_in_utc() -> None:
    """`*/5 * * * *` fires every five minutes on the UTC clock, strictly after the given time."""
    runs = schedule.next_runs(schedule.cron_trigger("*/5 * * * *"), SATURDAY, 3)
    assert runs == [SATURDAY + timedelta(minutes=m) for m in (5, 10, 15)]


def test_interval_next_runs() -> None:
    """An interval fires every period from its start."""
    trigger = schedule.interval_trigger(timedelta(minutes=5), start=SATURDAY)
    assert schedule.next_runs(trigger, SATURDAY, 3) == [SATURDAY + timedelta(minutes=m) for m in (5, 10, 15)]


@pytest.mark.parametrize("expression", ["* * * *", "0 4 * * 9", "0 4 * * 5-1", "0 25 * * *", "0 4 * * */0"])
def test_bad_cron(expression: str) -> None:
    """Malformed cron expressions raise ScheduleError with a message."""
    with pytest.raises(schedule.ScheduleError):
        schedule.cron_trigger(expression)
