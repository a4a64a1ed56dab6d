"""Node parameters without ROS: their tables, their types and one-line errors.

A parameter's kind is rclpy's type name in words ('double', 'integer array', ...); the
ROS layer (ros/parameters.py) declares each with the matching rclpy type and hands the
values back here. Everything that can be wrong with a value is decided here, so it is
tested in-process, not by starting a node per case.
"""
from __future__ import annotations

import array
import difflib
from collections.abc import Iterable
from dataclasses import dataclass

KINDS = ('bool', 'integer', 'double', 'string', 'bool array', 'integer array', 'double array',
         'string array', 'byte array')


@dataclass(frozen=True)
class Param:
    """default: the value when none is given (None: unset, for an array without default);
    runtime: changeable while the node runs (checked on every change)."""

    default: object
    description: str
    kind: str
    runtime: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f'unknown parameter kind {self.kind!r}')

    @property
    def element(self) -> str | None:
        """The element kind of an array parameter ('integer' for 'integer array')."""
        return self.kind[:-len(' array')] if self.kind.endswith(' array') else None


def param(default: object, description: str, runtime: bool = False) -> Param:
    """A parameter whose kind is its default's."""
    return Param(default, description, kind_of(default), runtime)


def array_param(element: str, description: str, runtime: bool = False) -> Param:
    """An array parameter without default (None until given)."""
    return Param(None, description, f'{element} array', runtime)


Table = dict[str, Param]


def kind_of(value: object) -> str:
    """The parameter kind a Python value has, as rclpy would type it."""
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'double'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, bytes):
        return 'byte array'
    if isinstance(value, array.array):
        return 'double array' if value.typecode in 'fd' else 'integer array'
    if isinstance(value, (list, tuple)) and value:
        return f'{kind_of(value[0])} array'
    raise ValueError(f'{value!r} has no parameter type')


def words(kind: str) -> str:
    """'a double', 'an integer array'."""
    return ('an ' if kind[0] in 'aeiou' else 'a ') + kind


def checked_value(name: str, value: object, spec: Param) -> object:
    """`value` as the parameter's kind: an integer is taken where a double is expected, and a
    single item where an array is (`classes:=5`, the natural way to write one class).
    Otherwise ValueError naming the parameter, the value and the kind accepted: one line
    instead of rclpy's traceback or type error."""
    if value is None:
        return None  # an array without default that was never set
    if isinstance(value, (list, tuple, array.array)) and not value and spec.element:
        return []  # an empty list has no element type of its own
    given = kind_of(value)
    if given == spec.kind:
        return list(value) if spec.element else value
    if spec.kind == 'double' and given == 'integer':
        return float(value)
    if spec.element is not None and given == spec.element:
        return [value]
    raise ValueError(f'parameter {name}: {value!r} is {words(given)}, expected '
                     f'{words(spec.kind)}' + (f' (or {words(spec.element)})'
                                               if spec.element else ''))


def check_values(table: Table, given: dict[str, object]) -> dict[str, object]:
    """Every parameter of table, checked: its given value, else its default."""
    return {name: checked_value(name, given.get(name, spec.default), spec)
            for name, spec in table.items()}


def unknown_names(given: Iterable[str], declared: Iterable[str],
                  others: Iterable[str] = ()) -> list[str]:
    """Parameters given to a node (-p, YAML) that it does not declare, each with the closest
    declared name: a misspelling must not pass in silence. others: the parameters of this
    package's other nodes (config/detector.yaml shares `/**` between them)."""
    declared = sorted(set(declared))
    out = []
    for name in sorted(set(given) - set(declared) - set(others)):
        close = difflib.get_close_matches(name, declared, n=1)
        out.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ''))
    return out
