"""Checks our TensorRT calls against a real TensorRT Python module, from its pybind
signatures. Run as a script in a process of its own (each TensorRT version is imported
alone): `python trt_conformance.py MODULE [--uses|--fake|--gate] [FILE ...]` prints JSON.

What is checked, in every module of ours that talks to TensorRT (MODULES; FILEs instead
where given), on every value whose type trt_infer.py follows (the TensorRT module and the
TensorRT objects made by constructors, methods and properties, through any variable name,
attribute, function call or chain):
- names: every `trt.X.Y` the code names exists in the module (classes, enums and their
  members, functions), and every attribute read on a TensorRT object exists on its class;
- calls of TensorRT methods and constructors: one pybind overload fits the call: no more
  positional arguments than parameters, every keyword a parameter not given positionally,
  every required parameter given, and every argument of known type of a type the parameter
  takes: a member of that enum where an enum is expected, an object of that class or of a
  subclass (ours included) where a class is, an int or bool where an int is, a str where
  a str is, bytes where a buffer is, a tuple or list where Dims or a sequence is. A starred
  argument of unknown length turns the count checks off for that call;
- assignments to attributes of TensorRT objects (`config.x = ...`): x is a property of the
  class with a setter, and the value, where its type is known, is of a type the setter takes;
- overrides: every method our subclasses of TensorRT interfaces define (logger, progress
  monitor, calibrator; our `_helpers` excepted) exists in the base with the same parameter
  names in the same order: TensorRT calls them positionally.
Not checked, and left to the builds and runs of test_builder.py and
test_tensorrt_backend.py: values (which member of the right enum, a size in the right
unit), behaviour, and anything done with a value whose type cannot be followed.

--fake checks the shared fake (yolo_trt_ros/testing/fake_tensorrt.py) instead: its runtime
classes' methods take the bindings' parameter names in the bindings' order (trailing
optional ones may be left out), its enums have the bindings' members and values, and its
nptype maps every DataType as the real one does.
--gate prints what trt_build.strongly_typed_only says of this module, and whether it has
the weak-typing flag BuilderFlag.FP16.
--uses prints every (class or 'module', member) the scan checked.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path

from trt_binding import Binding, signatures
from trt_infer import NONE, Program, Scope, Ty, own_nodes

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / 'yolo_trt_ros' / 'core'
MODULES = [CORE / 'backends' / 'tensorrt.py', CORE / 'backends' / 'trt_module.py',
           CORE / 'build' / 'trt_build.py', CORE / 'build' / 'calibrator.py']
_SCALARS = {'int': ('int', 'bool'), 'float': ('int', 'float', 'bool'), 'bool': ('bool', 'int'),
            'str': ('str',), 'buffer': ('bytes',)}


class Checker:
    """Every TensorRT use in the program, checked against its binding."""

    def __init__(self, program: Program) -> None:
        self.program, self.binding = program, program.binding
        self.problems: set[str] = set()
        self.uses: set[tuple[str, str]] = set()

    def run(self) -> Checker:
        for scope in self.program.scopes:
            nodes = list(own_nodes(scope.node))
            values = {id(t): n.value for n in nodes if isinstance(n, ast.Assign)
                      for t in n.targets}
            called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
            for node in nodes:
                where = f'{scope.filename}:{getattr(node, "lineno", 0)}'
                if isinstance(node, ast.Call):
                    self._call(node, scope, where)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    self._store(node, values.get(id(node)), scope, where)
                elif isinstance(node, ast.Attribute) and id(node) not in called:
                    self._read(node, scope, where)
                elif isinstance(node, ast.ClassDef):
                    self._overrides(node, scope.defs[node.name])
        return self

    def _type(self, node: ast.expr, scope: Scope) -> Ty:
        return self.program.type_of(node, scope) or Ty('unknown')

    # -- names ---------------------------------------------------------------------------
    def _read(self, node: ast.Attribute, scope: Scope, where: str) -> object:
        """The member an attribute names, reported where it does not exist."""
        base = self._type(node.value, scope)
        if base.kind == 'trt':
            owner = self.binding.trt if not base.name else self.binding.cls(base.name)
            full = f'{base.name}.{node.attr}' if base.name else node.attr
            self.uses.add(('module', full))
            member = getattr(owner, node.attr, None)
            if member is None:
                self.problems.add(f'{where}: {full} does not exist')
            return member
        if base.kind == 'inst':
            self.uses.add((base.name, node.attr))
            member = self.binding.member(base.name, node.attr)
            if member is None:
                self.problems.add(f'{where}: {base.name}.{node.attr} does not exist')
            return member
        return None

    # -- calls ---------------------------------------------------------------------------
    def _call(self, node: ast.Call, scope: Scope, where: str) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            base = self._type(func.value, scope)
            member = self._read(func, scope, where)
            if member is None:
                return
            if base.kind == 'inst' and not isinstance(member, (property, type)):
                self._arguments(f'{base.name}.{func.attr}', member, node, scope, where)
                return
        callee = self._type(func, scope)
        made = self.binding.cls(callee.name) if callee.kind == 'trt' and callee.name else None
        if made is not None:
            self.uses.add((callee.name, '__init__'))
            self._arguments(f'{callee.name}.__init__', made.__init__, node, scope, where)

    def _arguments(self, name: str, member, node: ast.Call, scope: Scope, where: str) -> None:
        sigs = signatures(member)
        if not sigs:
            return
        positional: list[Ty] = []
        open_ended = False
        for arg in node.args:
            if not isinstance(arg, ast.Starred):
                positional.append(self._type(arg, scope))
                continue
            spread = self._type(arg.value, scope)
            if spread.kind in ('tuple', 'list') and spread.items is not None:
                positional.extend(spread.items)
            else:
                open_ended = True
                break
        keywords = {k.arg: self._type(k.value, scope) for k in node.keywords if k.arg}
        open_ended |= any(k.arg is None for k in node.keywords)
        if not any(self._fits(sig, positional, keywords, open_ended) for sig in sigs):
            given = ', '.join(_describe(t) for t in positional)
            declared = ' or '.join('(' + ', '.join(f'{p.name}: {self.binding.kind(p.type)}'
                                                   for p in sig.params) + ')' for sig in sigs)
            self.problems.add(f'{where}: {name} called with {len(positional)} positional '
                              f'({given}) and keywords {sorted(keywords)}; TensorRT declares '
                              f'{declared}')

    def _fits(self, sig, positional: list[Ty], keywords: dict[str, Ty], open_ended: bool) -> bool:
        names = sig.names
        if not open_ended and len(positional) > len(names):
            return False
        for keyword in keywords:
            if keyword not in names or keyword in names[:len(positional)]:
                return False
        if not open_ended:
            given = set(names[:len(positional)]) | set(keywords)
            if any(not p.has_default and p.name not in given for p in sig.params):
                return False
        by_name = {p.name: p for p in sig.params}
        return all(self.takes(p.type, t) for p, t in zip(sig.params, positional, strict=False)) \
            and all(self.takes(by_name[k].type, t) for k, t in keywords.items())

    def takes(self, annotation: str, value: Ty) -> bool:
        """Whether a parameter (or setter) of this annotation takes a value of this type."""
        if value.kind == 'unknown':
            return True
        kind = self.binding.kind(annotation)
        if kind == 'any':
            return True
        scalar = kind in _SCALARS or kind in ('sequence', 'None')
        if value == NONE:  # pybind passes None as nullptr for an object, never for a value
            return kind == 'None' or not (scalar or self.binding.is_enum(kind))
        if kind in _SCALARS:
            return value.kind == 'builtin' and value.name in _SCALARS[kind]
        if kind == 'sequence':
            return value.kind in ('tuple', 'list')
        if kind == 'None':
            return False
        actual = value.name if value.kind == 'inst' else \
            self._trt_base(self.program.by_id[value.name]) if value.kind == 'ours' else None
        if actual is None:  # pybind converts a tuple or list to Dims implicitly
            return kind == 'Dims' and value.kind in ('tuple', 'list')
        return actual == kind or self.binding.subclass(actual, kind)

    def _trt_base(self, cls: Scope) -> str | None:
        return cls.trt_base or next((b for b in map(self._trt_base, cls.our_bases) if b), None)

    # -- attribute assignments -------------------------------------------------------------
    def _store(self, node: ast.Attribute, value: ast.expr | None, scope: Scope,
               where: str) -> None:
        base = self._type(node.value, scope)
        if base.kind != 'inst':
            return
        name = f'{base.name}.{node.attr}'
        self.uses.add((base.name, node.attr))
        member = self.binding.member(base.name, node.attr)
        if member is None:
            self.problems.add(f'{where}: {name} does not exist')
        elif not isinstance(member, property):
            self.problems.add(f'{where}: {name} is not a property')
        elif member.fset is None:
            self.problems.add(f'{where}: {name} is read-only')
        elif value is not None:
            setter = self.binding.property_types(member)[1] or ''
            given = self._type(value, scope)
            if not self.takes(setter, given):
                self.problems.add(f'{where}: {name} set to {_describe(given)}; TensorRT takes '
                                  f'{self.binding.kind(setter)}')

    # -- overrides -----------------------------------------------------------------------
    def _overrides(self, node: ast.ClassDef, cls: Scope) -> None:
        base = cls.trt_base
        if base is None:
            return
        for item in node.body:
            if not isinstance(item, ast.FunctionDef) or item.name.startswith('_'):
                continue  # __init__ and our helpers are no overrides
            where = f'{cls.filename}:{item.lineno}'
            self.uses.add((base, item.name))
            member = self.binding.member(base, item.name)
            if member is None:
                self.problems.add(f'{where}: {base}.{item.name} does not exist')
                continue
            declared = [s.names for s in signatures(member)]
            ours = [a.arg for a in item.args.args[1:]]
            if declared and ours not in declared:
                self.problems.add(f'{where}: {base}.{item.name} overridden with parameters '
                                  f'{ours}, TensorRT declares {declared}')


def _describe(ty: Ty) -> str:
    if ty.kind in ('builtin', 'inst'):
        return ty.name
    return {'none': 'None', 'tuple': 'tuple', 'list': 'list', 'ours': 'our object'}.get(
        ty.kind, '?')


def check(trt, paths: list[Path] = MODULES) -> Checker:
    return Checker(Program(Binding(trt), paths, ROOT)).run()


def fake_problems(trt, fake) -> list[str]:
    """Where the shared fake (the module `fake`) differs from this binding (see the module
    docstring)."""
    import numpy as np

    binding, out = Binding(trt), []
    methods = {f'{cls}.{name}': value for cls in ('Runtime', 'ICudaEngine', 'IExecutionContext')
               for name, value in vars(getattr(fake, cls)).items() if not name.startswith('_')}
    methods['Runtime.__init__'] = fake.FakeTensorRT.Runtime  # what `trt.Runtime(...)` is
    for path, value in methods.items():
        cls, name = path.split('.')
        member = binding.member(cls, name)
        if member is None:
            out.append(f'fake {path}: not in the binding')
        elif isinstance(value, property) != isinstance(member, property):
            out.append(f'fake {path}: a property in one, not in the other')
        elif callable(value):  # the fake may leave out trailing optional parameters
            ours = list(inspect.signature(value).parameters)[1:]
            sigs = signatures(member)
            if not any(s.names[:len(ours)] == ours and all(p.has_default for p in
                                                            s.params[len(ours):]) for s in sigs):
                out.append(f'fake {path}{ours}: the binding declares {[s.names for s in sigs]}')
    for path in ('DataType', 'TensorIOMode', 'ILogger.Severity'):
        mine = fake.FakeTensorRT.DataType if path == 'DataType' else \
            fake.TensorIOMode if path == 'TensorIOMode' else fake.ILogger.Severity
        for name, value in binding.cls(path).__members__.items():
            if name not in mine.__members__ or int(mine[name]) != int(value):
                out.append(f'fake {path}.{name}: missing or not {int(value)}')
    for name in trt.DataType.__members__:
        results = []
        for module, dtype in ((trt, getattr(trt.DataType, name)), (fake, fake.DataType[name])):
            try:
                results.append(np.dtype(module.nptype(dtype)))
            except TypeError:
                results.append('TypeError')
        if results[0] != results[1]:
            out.append(f'fake nptype(DataType.{name}): {results[1]}, TensorRT: {results[0]}')
    for alias in ('float32', 'float16', 'int8', 'int32', 'int64', 'bool', 'uint8', 'bfloat16',
                  'fp8', 'int4'):
        if hasattr(trt, alias) and getattr(fake.FakeTensorRT, alias).name != \
                getattr(trt, alias).name:
            out.append(f'fake {alias}: not DataType.{getattr(trt, alias).name}')
    return out


def gate(trt) -> dict:
    sys.path.insert(0, str(ROOT))
    from yolo_trt_ros.core.build.trt_build import strongly_typed_only
    return {'version': trt.__version__, 'strongly_typed': strongly_typed_only(trt),
            'fp16_flag': hasattr(trt.BuilderFlag, 'FP16')}


if __name__ == '__main__':
    module = importlib.import_module(sys.argv[1])
    mode = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2].startswith('--') else ''
    paths = [Path(p) for p in sys.argv[2 + bool(mode):]] or MODULES
    if mode == '--fake':  # FILE: another copy of the fake (the test's negative case)
        sys.path.insert(0, str(ROOT))
        fake_path = paths[0] if sys.argv[3:] else \
            ROOT / 'yolo_trt_ros' / 'testing' / 'fake_tensorrt.py'
        spec = importlib.util.spec_from_file_location('fake_under_test', fake_path)
        fake = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = fake  # dataclasses look their module up
        spec.loader.exec_module(fake)
        result: object = sorted(fake_problems(module, fake))
    elif mode == '--gate':
        result = gate(module)
    elif mode == '--uses':
        result = sorted(check(module, paths).uses)
    else:
        result = sorted(check(module, paths).problems)
    print(json.dumps(result))
