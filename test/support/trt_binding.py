"""What a real TensorRT Python module declares, read from its pybind signatures: the
classes, their methods (parameter names, types, defaults, return type, per overload) and
properties (type, whether settable). Used by the conformance scan (trt_conformance.py),
in a process that imported one TensorRT binding on stub libraries."""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from types import ModuleType

_SIG = re.compile(r'^(?:\d+\. )?(\w+)\((.*)\) -> (.*)$')
_PROPERTY = re.compile(r'^\((.*)\) -> (.*)$')
# Types pybind prints in C++ spelling where the binding has no Python name for them.
_CPP_NAMES = {'nvonnxparser::IParserError': 'ParserError'}
# Annotation -> kind, for the builtin types pybind prints.
_BUILTINS = {'int': 'int', 'typing.SupportsInt': 'int', 'float': 'float',
             'typing.SupportsFloat': 'float', 'bool': 'bool', 'str': 'str', 'bytes': 'buffer',
             'buffer': 'buffer', 'typing_extensions.Buffer': 'buffer',
             'collections.abc.Buffer': 'buffer', 'tuple': 'sequence', 'list': 'sequence',
             'None': 'None'}


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # as the signature prints it
    has_default: bool


@dataclass(frozen=True)
class Signature:
    params: tuple[Param, ...]  # without self
    returns: str

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]


def _split_top(text: str) -> list[str]:
    """Split on the commas outside brackets."""
    parts, depth, cur = [], 0, ''
    for ch in text:
        depth += ch in '[(' or 0
        depth -= ch in '])' or 0
        if ch == ',' and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def _param(text: str) -> Param:
    head, _, default = text.partition('=')
    name, _, annotation = head.partition(':')
    return Param(name.strip(), annotation.strip(), bool(default))


def signatures(obj) -> list[Signature]:
    """One Signature per pybind overload of obj (a method or function), from its __doc__;
    a Python function's from inspect (names only)."""
    if inspect.isfunction(obj):
        params = tuple(Param(p.name, '', p.default is not p.empty)
                       for p in inspect.signature(obj).parameters.values())
        return [Signature(params, '')]
    sigs = []
    for line in (getattr(obj, '__doc__', '') or '').splitlines():
        m = _SIG.match(line.strip())
        if m:
            params = tuple(_param(p) for p in _split_top(m.group(2)))
            sigs.append(Signature(tuple(p for p in params if p.name not in
                                        ('self', '*args', '**kwargs')), m.group(3).strip()))
    return sigs


class Binding:
    """One TensorRT module's declarations."""

    def __init__(self, trt: ModuleType) -> None:
        self.trt = trt

    def cls(self, path: str):
        """The class at a dotted path below the module ('ILogger.Severity'), or None."""
        obj = self.trt
        for part in path.split('.'):
            obj = getattr(obj, part, None)
        return obj if isinstance(obj, type) else None

    def class_path(self, annotation: str) -> str | None:
        """The binding's class that an annotation names ('tensorrt_bindings.tensorrt.
        ILogger.Severity' -> 'ILogger.Severity'), or None for anything else."""
        annotation = _CPP_NAMES.get(annotation, annotation)
        parts = annotation.split('.')
        for i in range(len(parts)):
            found = self.cls('.'.join(parts[i:]))
            if found is not None:
                return found.__qualname__
        return None

    def kind(self, annotation: str) -> str:
        """What an annotation accepts: a class path of the binding, a builtin kind (int,
        float, bool, str, buffer, sequence, None), or 'any' where we cannot tell."""
        path = self.class_path(annotation)
        if path is not None:
            return path
        if annotation in _BUILTINS:
            return _BUILTINS[annotation]
        if re.match(r'^(typing\.)?(List|list|Sequence|collections\.abc\.Sequence)\[', annotation):
            return 'sequence'
        return 'any'

    def is_enum(self, path: str) -> bool:
        return hasattr(self.cls(path), '__members__')

    def member(self, path: str, attr: str):
        """The attribute of a binding class (a method, a property, a nested class, an enum
        member), or None."""
        return getattr(self.cls(path), attr, None)

    def property_types(self, prop: property) -> tuple[str, str | None]:
        """(type read, type set or None where read-only), as annotations."""
        def annotation(fn, index: int) -> str:
            first = (getattr(fn, '__doc__', '') or '').strip().splitlines()
            m = _PROPERTY.match(first[0]) if first else None
            if not m:
                return ''
            return m.group(2).strip() if index < 0 else \
                _param(_split_top(m.group(1))[index]).type
        read = annotation(prop.fget, -1) if prop.fget else ''
        return read, (annotation(prop.fset, 1) if prop.fset else None)

    def subclass(self, actual: str, expected: str) -> bool:
        a, e = self.cls(actual), self.cls(expected)
        return a is not None and e is not None and issubclass(a, e)
