"""Read YAML keeping the line and column of every value, so that each config error can point at it.

PyYAML's loaders forget where values came from and silently keep the last of duplicate keys, so we compose
the node tree ourselves and build plain Python values from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Location = tuple[int, int]  # 1-based line and column
# A config is a few levels deep and a few thousand values at most. The bounds keep hostile files (deep
# nesting, recursive aliases, "billion laughs" alias bombs) from exhausting the stack or the memory.
MAX_DEPTH = 32
MAX_VALUES = 100_000
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class SourceError:
    line: int
    column: int
    message: str


class YamlSourceError(Exception):
    """The file could not be read as YAML; `errors` says where and why."""

    def __init__(self, errors: list[SourceError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


@dataclass
class YamlDocument:
    data: Any
    # Where each value starts; for mapping entries also where the key starts (path + ("<key>",)).
    locations: dict[KeyPath, Location]

    def locate(self, path: KeyPath) -> Location:
        """The location of the deepest part of `path` that exists in the file."""
        for end in range(len(path), -1, -1):
            found = self.locations.get(tuple(path[:end]))
            if found:
                return found
        return (1, 1)

    def locate_key(self, path: KeyPath) -> Location:
        return self.locations.get((*path, "<key>"), self.locate(path))


def _where(node: yaml.Node) -> Location:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _TooBig(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before composing: PyYAML's composer recurses once per level,
    while its parser, which this walks, does not."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
                raise YamlSourceError(
                    [SourceError(line, col, f"values nested deeper than {MAX_DEPTH} levels")]
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


class _Builder:
    def __init__(self) -> None:
        self.constructor = yaml.SafeLoader("")
        self.locations: dict[KeyPath, Location] = {}
        self.errors: list[SourceError] = []
        self.built = 0  # values built so far, aliases counted each time they are expanded

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.built += 1
        if len(path) > MAX_DEPTH:
            raise _TooBig(node, f"values nested deeper than {MAX_DEPTH} levels (a recursive alias?)")
        if self.built > MAX_VALUES:
            raise _TooBig(node, f"the file expands to more than {MAX_VALUES} values (aliases of aliases?)")
        self.locations[path] = _where(node)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            seen: dict[Any, Location] = {}
            self.constructor.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    line, col = _where(key_node)
                    self.errors.append(
                        SourceError(line, col, f"key {key!r} must be a string (quote it if it is a name)")
                    )
                    continue
                if key in seen:
                    line, col = _where(key_node)
                    first = seen[key]
                    self.errors.append(
                        SourceError(line, col, f"duplicate key {key!r} (first defined at line {first[0]})")
                    )
                    continue
                seen[key] = _where(key_node)
                self.locations[(*path, key, "<key>")] = _where(key_node)
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)


def load(path: Path) -> YamlDocument:
    """Parse one YAML document from `path`, rejecting duplicate and non-string keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlSourceError([SourceError(1, 1, f"cannot read file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise YamlSourceError([SourceError(1, 1, f"not UTF-8 text: {exc.reason}")]) from None
    return loads(text)


def loads(text: str) -> YamlDocument:
    try:
        _check_depth(text)
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join((exc.problem or exc.context or "invalid YAML").split())
        raise YamlSourceError([SourceError(line, col, f"YAML syntax error: {problem}")]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise YamlSourceError(
            [SourceError(line, col, f"character {exc.character!r} is not allowed in YAML ({exc.reason})")]
        ) from None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        raise YamlSourceError([SourceError(1, 1, f"YAML error: {message}")]) from None
    if len(documents) > 1 and documents[1] is not None:
        line, col = _where(documents[1])
        raise YamlSourceError([SourceError(line, col, "the file must hold one YAML document, not several")])
    if not documents or documents[0] is None:
        raise YamlSourceError([SourceError(1, 1, "the file is empty; it must be a mapping with `services:`")])
    builder = _Builder()
    try:
        data = builder.build(documents[0], ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlSourceError([SourceError(line, col, f"YAML error: {exc.problem}")]) from None
    except _TooBig as exc:
        line, col = _where(exc.node)
        raise YamlSourceError([SourceError(line, col, exc.message)]) from None
    if builder.errors:
        raise YamlSourceError(builder.errors)
    return YamlDocument(data, builder.locations)
