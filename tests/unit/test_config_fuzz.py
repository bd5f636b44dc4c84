"""Property: whatever the file, `validate` ends in a valid config or FILE:LINE:COL problems, never a
traceback, quickly. Inputs are byte-level and structured mutations of the shipped example config."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockwarden import config as configuration

EXAMPLE = (Path(__file__).parents[2] / "config" / "dockwarden.yaml").read_text()
# YAML's structural characters weigh more than letters: they are what breaks parsers.
ALPHABET = st.sampled_from([*":-[]{}&*!|>#'\"%@`,?\n\t ", "0", "9", "x", "é", "\x00", "\ufeff", "d", "h"])
SETTINGS = settings(
    max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _validate(text: str) -> None:
    """Load `text` as a config file; only ConfigError may come out, each problem positioned."""
    problems: list[configuration.ConfigProblem] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dw.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            configuration.load(path)
            return
        except configuration.ConfigError as exc:
            problems = exc.problems
    assert problems
    assert all(p.line >= 1 and p.column >= 1 and p.message for p in problems)


@st.composite
def byte_mutations(draw: st.DrawFn) -> str:
    text = EXAMPLE
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        match draw(st.sampled_from(["insert", "delete", "duplicate-line"])):
            case "insert":
                text = text[:at] + draw(st.text(ALPHABET, min_size=1, max_size=4)) + text[at:]
            case "delete":
                text = text[:at] + text[at + draw(st.integers(1, 40)) :]
            case _:
                lines = text.splitlines(keepends=True) or [""]
                line = draw(st.integers(0, len(lines) - 1))
                text = "".join([*lines[: line + 1], lines[line], *lines[line + 1 :]])
    return text


DURATIONS = st.from_regex(r"\A[0-9]{1,25}[dhms]\Z")
VALUES = st.recursive(
    DURATIONS
    | st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["99999999999999999999d", "0s", "1h30m", "* * * * *", "auto", "sha256:x", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def structured_mutations(draw: st.DrawFn) -> str:
    data = yaml.safe_load(EXAMPLE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(data)))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = draw(VALUES)
    return yaml.safe_dump(data, allow_unicode=True)


@SETTINGS
@given(byte_mutations())
def test_byte_mutations_of_the_example_never_crash(text: str) -> None:
    """Characters inserted, spans deleted and lines duplicated anywhere give a config or its problems."""
    _validate(text)


@SETTINGS
@given(structured_mutations())
def test_structured_mutations_of_the_example_never_crash(text: str) -> None:
    """Any value of any key replaced by any YAML value gives a config or positioned problems."""
    _validate(text)


DURATION_KEYS = [
    ("interval",),
    ("registry_timeout",),
    ("engine_timeout",),
    ("stability_window",),
    ("health_timeout_max",),
    ("gc", "min_age"),
]


@SETTINGS
@given(st.sampled_from(DURATION_KEYS), DURATIONS)
def test_any_number_in_any_duration_key_never_crashes(key: tuple[str, ...], value: str) -> None:
    """A duration of any size (up to 25 digits, any unit) in any duration key is a config or a problem."""
    data = yaml.safe_load(EXAMPLE)
    parent = data
    for part in key[:-1]:
        parent = parent.setdefault(part, {})
    parent[key[-1]] = value
    _validate(yaml.safe_dump(data))
