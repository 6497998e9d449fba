"""Values from YAML checked against the type hints of dataclass fields (or of a function).

One function, ``check_value``, walks an annotation (int, float, bool, str, Literal, Optional,
list, tuple, dict, nested dataclass, Any) and either returns the value or raises a GridError that
names the file, line and key path, what was expected and what was given. Field metadata adds a
``minimum`` (applied to every number inside the value) and ``nonempty`` (for lists).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import re
import types
import typing
from typing import Any, Literal, Union

from savfi_core.study.loader import GridError, Location

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")  # YAML 1.1 reads 1e-4 as a string


def describe(annotation: Any, minimum: float | None = None) -> str:
    """An annotation in words: 'an integer >= 1', 'one of [...]', 'a list of ...'."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    bound = f" >= {minimum}" if minimum is not None else ""
    if annotation is Any:
        return "any value"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return f"an integer{bound}"
    if annotation is float:
        return f"a number{bound}"
    if annotation is str:
        return "a string"
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return f"one of {list(arguments)}"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(argument, minimum) for argument in arguments)
    if origin in (list, tuple):
        return f"a list of {describe(arguments[0], minimum)}" if arguments else "a list"
    if origin is dict or annotation is dict:
        return "a mapping"
    if dataclasses.is_dataclass(annotation):
        return f"a mapping of {sorted(field.name for field in dataclasses.fields(annotation))}"
    return getattr(annotation, "__name__", str(annotation))


def check_value(value: Any, annotation: Any, where: Location, minimum: float | None = None, nonempty: bool = False) -> Any:
    """``value`` if it fits ``annotation`` (numeric strings such as '1e-4' become floats)."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    expected = describe(annotation, minimum) + (" (not empty)" if nonempty else "")
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        candidates = [argument for argument in arguments if argument is not type(None)]
        for candidate in candidates:
            try:
                return check_value(value, candidate, where, minimum, nonempty)
            except GridError as error:
                if len(candidates) == 1:
                    raise
                last = error
        raise where.error(expected, value) from last
    if origin is Literal:
        if isinstance(value, bool) or value not in arguments:
            raise where.error(expected, value)
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise where.error(expected, value)
        return value
    if annotation in (int, float):
        if isinstance(value, str) and annotation is float and _NUMBER.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float) if annotation is float else int):
            raise where.error(expected, value)
        if minimum is not None and value < minimum:
            raise where.error(expected, value)
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise where.error(expected, value)
        return value
    if annotation is type(None):
        if value is not None:
            raise where.error(expected, value)
        return None
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)) or (nonempty and not value):
            raise where.error(expected, value)
        item = arguments[0] if arguments else Any
        return [check_value(element, item, where.at(index), minimum) for index, element in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise where.error(expected, value)
        item = arguments[1] if len(arguments) == 2 else Any
        return {key: check_value(element, item, where.at(key), minimum) for key, element in value.items()}
    if dataclasses.is_dataclass(annotation):
        return check_fields(value, annotation, where)
    raise TypeError(f"check_value: unsupported annotation {annotation!r} at {where}")


def refuse_unknown(mapping: dict, allowed: typing.Iterable[str], where: Location, what: str = "key") -> None:
    allowed = sorted(allowed)
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise GridError(f"{where.at(key)}: unknown {what} {key!r}{hint}; expected one of {allowed}")


def check_fields(mapping: Any, cls: type, where: Location, *, partial: bool = False, grid: bool = True,
                 only: typing.Iterable[str] | None = None) -> dict:
    """Check a mapping against the fields of dataclass ``cls``: unknown keys refused, each value
    against its field's type, missing required fields refused unless ``partial`` (an override);
    in a grid (``grid``) a field with a ``grid_default`` may be missing: the expansion fills it."""
    if not isinstance(mapping, dict):
        raise where.error(describe(cls), mapping)
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if only is None or field.name in set(only)}
    refuse_unknown(mapping, fields, where)
    checked, problems = {}, []
    for name, field in fields.items():
        try:
            if name in mapping:
                checked[name] = check_value(mapping[name], hints[name], where.at(name), field.metadata.get("minimum"),
                                            field.metadata.get("nonempty", False))
            elif (not partial and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
                  and not (grid and field.metadata.get("grid_default"))):
                raise GridError(f"{where}: missing key {name!r} ({describe(hints[name])})")
        except GridError as error:  # every problem of a mapping at once, one per line
            problems.append(str(error))
    if problems:
        raise GridError("\n".join(problems))
    return checked


def keyword_hints(function: typing.Callable, exclude: typing.Iterable[str] = ()) -> dict[str, Any]:
    """Keyword parameter name -> annotation (Any where none) of ``function`` (a class: its __init__)."""
    base = function.func if isinstance(function, functools.partial) else function
    target = base.__init__ if inspect.isclass(base) else base
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve is checked as Any, not guessed
        hints = {}
    parameters = inspect.signature(function).parameters
    return {name: hints.get(name, Any) for name, parameter in parameters.items()
            if parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
            and name not in set(exclude) and name != "self"}


def check_keywords(mapping: Any, function: typing.Callable, where: Location, exclude: typing.Iterable[str] = ()) -> dict:
    """Check a mapping of keyword arguments against a function's signature and annotations."""
    if not isinstance(mapping, dict):
        raise where.error("a mapping", mapping)
    hints = keyword_hints(function, exclude)
    refuse_unknown(mapping, hints, where, f"option of {getattr(function, '__qualname__', function)}")
    return {name: check_value(value, hints[name], where.at(name)) for name, value in mapping.items()}
