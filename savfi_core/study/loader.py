"""Reading a grid YAML so that every error can point at its line.

``load_yaml`` returns the plain data and a map from key path (a tuple of keys and list indices)
to the 1-based line where that key or item stands. Duplicate keys are refused: PyYAML keeps the
last one silently, which turns a copy-paste slip into a different study.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple  # of str keys and int list indices


class GridError(ValueError):
    """The grid file is malformed; the message names the file, the line and the key."""


@dataclass(frozen=True)
class Location:
    """Where a value stands in a grid file: file, key path and the line marks of that file."""

    source: str
    marks: dict
    path: KeyPath = ()

    def at(self, *keys: Any) -> "Location":
        return Location(self.source, self.marks, self.path + tuple(keys))

    @property
    def line(self) -> int | None:
        for end in range(len(self.path), -1, -1):  # the value itself, else its nearest parent
            if self.path[:end] in self.marks:
                return self.marks[self.path[:end]]
        return None

    @property
    def dotted(self) -> str:
        text = ""
        for key in self.path:
            text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
        return text or "<top level>"

    def __str__(self) -> str:
        line = self.line
        return f"{self.source}{f':{line}' if line else ''}: {self.dotted}"

    def error(self, expected: str, given: Any) -> GridError:
        return GridError(f"{self}: expected {expected}, got {given!r}")


def _walk(node: yaml.Node, path: KeyPath, marks: dict, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in first_line:
                where = Location(source, {path + (key,): line}, path + (key,))
                raise GridError(f"{where}: duplicate key (first at line {first_line[key]}); "
                                f"YAML would keep only the last one")
            first_line[key] = line
            marks[path + (key,)] = line
            _walk(value_node, path + (key,), marks, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            marks[path + (index,)] = item.start_mark.line + 1
            _walk(item, path + (index,), marks, source)


def load_yaml(path: str | Path) -> tuple[Any, dict]:
    """(data, marks) of a YAML file; GridError for a missing file, bad YAML or a duplicate key."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file not found: {path}")
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        marks: dict = {}
        if node is not None:
            _walk(node, (), marks, str(path))
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        raise GridError(f"{path}: not valid YAML: {error}") from error
    finally:
        loader.dispose()
    return data, marks
