"""The type of every value in our TensorRT modules, followed through the code (never
guessed from a variable's name), for the conformance scan (trt_conformance.py).

A value's type comes from where it was made:
- the TensorRT module: a parameter annotated `ModuleType`, or `importlib.import_module(...)`
  (in these modules only TensorRT is imported that way; `import_tensorrt()` returns it);
- `trt.X.Y`: what the binding has there (a class, an enum member, a function);
- `trt.C(...)`: an instance of C;
- a method or property of a TensorRT object: the return type its pybind signature declares
  (`builder.create_builder_config()` -> IBuilderConfig, `network.get_input(0)` -> ITensor,
  `config.get_timing_cache()` -> ITimingCache), chained calls included;
- our code: assignments to any name (tuple unpacking too), `self.x` attributes (one type per
  class attribute), dataclass fields, the return values of our functions, and their
  parameters from their annotations or else from every call site in the scanned modules;
  instances of our classes, also of those derived from a TensorRT interface (a logger, a
  progress monitor, a calibrator);
- builtins: literals, f-strings, comparisons, int arithmetic and shifts, int(), len(),
  range() loops, tuples, and lists of known length (a comprehension over a tuple display).
Types are joined over every assignment of a name (flow-insensitive): None joins with
anything, two different types give `unknown`, and nothing is checked on an unknown value.
"""
from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trt_binding import Binding, signatures


@dataclass(frozen=True)
class Ty:
    """kind: unknown, none, builtin (name: int, str, ...), tuple/list (items, None: not
    known), trt (name: a path in the TensorRT module, '' for the module), inst (an instance
    of the binding's class `name`), ours (an instance of our class, name: its scope id),
    def (our function or class), bound (TensorRT method `attr` of class `name`), ourbound
    (our method), pymod (another Python module), importer (importlib.import_module),
    builtinfn (a builtin function)."""

    kind: str
    name: str = ''
    attr: str = ''
    items: tuple | None = None


UNKNOWN, NONE = Ty('unknown'), Ty('none')
_BUILTIN_RESULTS = {'int': 'int', 'len': 'int', 'str': 'str', 'repr': 'str', 'bytes': 'bytes',
                    'bool': 'bool', 'isinstance': 'bool', 'hasattr': 'bool', 'any': 'bool',
                    'all': 'bool', 'float': 'float', 'range': 'range'}
_BUILTIN_FUNCTIONS = set(_BUILTIN_RESULTS) | {'tuple', 'list', 'sorted', 'getattr', 'next',
                                             'iter', 'enumerate', 'zip', 'min', 'max', 'sum'}
_INT_OPS = (ast.LShift, ast.RShift, ast.BitOr, ast.BitAnd, ast.BitXor)


def join(a: Ty | None, b: Ty | None) -> Ty | None:
    """None is 'not seen yet'; NONE (the value None) joins with anything."""
    if a is None or a == NONE:
        return b if b is not None else a
    if b is None or b == NONE or a == b:
        return a
    if a.kind == b.kind and a.kind in ('tuple', 'list') and a.items is not None \
            and b.items is not None and len(a.items) == len(b.items):
        return Ty(a.kind, items=tuple(join(x, y) or UNKNOWN for x, y in zip(a.items, b.items,
                                                                           strict=True)))
    return UNKNOWN


def own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a scope: its body without the bodies of nested functions, classes and
    lambdas (the nested definitions themselves are included)."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                  ast.Lambda)):
            yield from own_nodes(child)


class Scope:
    """A module, class or function, with what is known about its names."""

    _ids = itertools.count()

    def __init__(self, node: ast.AST, parent: Scope | None, module: str, kind: str) -> None:
        self.node, self.parent, self.module, self.kind = node, parent, module, kind
        self.id = f'{module}:{getattr(node, "name", "")}#{next(self._ids)}'
        self.names: dict[str, Ty | None] = {}
        self.local: set[str] = set()
        self.defs: dict[str, Scope] = {}
        self.imports: dict[str, tuple[str, str | None]] = {}
        self.attrs: dict[str, Ty | None] = {}  # a class: its instances' attributes
        self.returns: Ty | None = None
        self.params: list[str] = []
        self.annotated: set[str] = set()
        self.param_annotations: dict[str, ast.expr] = {}
        self.cls: Scope | None = None  # a method: its class
        self.trt_base: str | None = None  # a class: the TensorRT class it derives from
        self.our_bases: list[Scope] = []
        self.filename = ''


class Program:
    """Our modules, analysed together against one binding."""

    def __init__(self, binding: Binding, paths: list[Path], root: Path) -> None:
        self.binding = binding
        self.modules: dict[str, Scope] = {}
        self.scopes: list[Scope] = []
        self.by_id: dict[str, Scope] = {}
        self._changed = False
        for path in paths:
            try:
                name = '.'.join(path.resolve().relative_to(root).with_suffix('').parts)
            except ValueError:
                name = path.stem
            tree = ast.parse(path.read_text())
            self.modules[name] = self._scope(tree, None, name, 'module', path.name)
        for scope in self.scopes:  # once every class of ours is known
            for param, annotation in scope.param_annotations.items():
                found = self._annotation(annotation, scope.parent)
                if found is not None:
                    scope.names[param] = found
                    scope.annotated.add(param)
        for _ in range(30):  # to a fixpoint: types only ever move up towards unknown
            self._changed = False
            for scope in self.scopes:
                self._infer(scope)
            if not self._changed:
                break

    # -- scopes --------------------------------------------------------------------------
    def _scope(self, node: ast.AST, parent: Scope | None, module: str, kind: str,
               filename: str, cls: Scope | None = None) -> Scope:
        scope = Scope(node, parent, module, kind)
        scope.filename, scope.cls = filename, cls
        self.scopes.append(scope)
        self.by_id[scope.id] = scope
        if kind == 'function':
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                scope.params.append(arg.arg)
                scope.local.add(arg.arg)
                if cls is not None and len(scope.params) == 1:  # self
                    scope.names[arg.arg] = Ty('ours', cls.id)
                    scope.annotated.add(arg.arg)
                elif arg.annotation is not None:
                    scope.param_annotations[arg.arg] = arg.annotation
        for child in own_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = self._scope(child, scope, module, 'function', filename,
                                    cls=scope if kind == 'class' else None)
                scope.defs[child.name] = inner
            elif isinstance(child, ast.ClassDef):
                scope.defs[child.name] = self._scope(child, scope, module, 'class', filename)
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                scope.local.add(child.id)
            elif isinstance(child, ast.ExceptHandler) and child.name:
                scope.local.add(child.name)
                scope.names[child.name] = UNKNOWN
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                for alias in child.names:
                    source = child.module if isinstance(child, ast.ImportFrom) else alias.name
                    scope.imports[alias.asname or alias.name.split('.')[0]] = (
                        source, alias.name if isinstance(child, ast.ImportFrom) else None)
        return scope

    def _bases(self, scope: Scope) -> None:
        """A class's bases (they may depend on inferred names, e.g. `trt`)."""
        trt_base, ours = None, []
        for base in scope.node.bases:
            found = self.type_of(base, scope.parent)
            if found is not None and found.kind == 'trt' and self.binding.cls(found.name):
                trt_base = found.name
            elif found is not None and found.kind == 'def':
                ours.append(self.by_id[found.name])
        if (trt_base, ours) != (scope.trt_base, scope.our_bases):
            scope.trt_base, scope.our_bases = trt_base, ours
            self._changed = True

    def _annotation(self, node: ast.expr, scope: Scope | None) -> Ty | None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | None
            sides = [self._annotation(n, scope) for n in (node.left, node.right)]
            known = [s for s in sides if s is not None and s != NONE]
            return known[0] if len(known) == 1 else None
        if isinstance(node, ast.Constant) and node.value is None:
            return NONE
        if isinstance(node, ast.Subscript):
            node = node.value
        name = node.id if isinstance(node, ast.Name) else None
        if name == 'ModuleType':
            return Ty('trt')
        if name in ('int', 'str', 'bool', 'bytes', 'float'):
            return Ty('builtin', name)
        if name in ('tuple', 'list'):
            return Ty(name)
        found = self.resolve(name, scope) if name and scope else None
        if found is not None and found.kind == 'def' and self.by_id[found.name].kind == 'class':
            return Ty('ours', found.name)
        return None

    def resolve(self, name: str, scope: Scope) -> Ty | None:
        current: Scope | None = scope
        while current is not None:
            if current.kind != 'class' or current is scope:
                if name in current.defs:
                    return Ty('def', current.defs[name].id)
                if name in current.imports:
                    return self._imported(*current.imports[name])
                if name in current.local:
                    return current.names.get(name)
            current = current.parent
        return Ty('builtinfn', name) if name in _BUILTIN_FUNCTIONS else UNKNOWN

    def _imported(self, module: str, name: str | None) -> Ty | None:
        if name is None:
            return Ty('pymod', module)
        target = self.modules.get(module)
        if target is None:
            return UNKNOWN
        if name in target.defs:
            return Ty('def', target.defs[name].id)
        return target.names.get(name, UNKNOWN)

    # -- inference -----------------------------------------------------------------------
    def _update(self, table: dict, key: str, ty: Ty | None) -> None:
        new = join(table.get(key), ty)
        if new != table.get(key):
            table[key] = new
            self._changed = True

    def _infer(self, scope: Scope) -> None:
        if scope.kind == 'class':
            self._bases(scope)
        for node in own_nodes(scope.node):
            if isinstance(node, ast.Assign):
                ty = self.type_of(node.value, scope)
                for target in node.targets:
                    self._bind(target, ty, scope)
            elif isinstance(node, ast.AnnAssign):
                ty = self.type_of(node.value, scope) if node.value is not None else \
                    self._annotation(node.annotation, scope.parent)
                if scope.kind == 'class' and isinstance(node.target, ast.Name):
                    self._update(scope.attrs, node.target.id, ty or UNKNOWN)
                else:
                    self._bind(node.target, ty, scope)
            elif isinstance(node, ast.NamedExpr):
                self._bind(node.target, self.type_of(node.value, scope), scope)
            elif isinstance(node, (ast.For, ast.comprehension)):
                self._bind(node.target, self._element(node.iter, scope), scope)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                self._bind(node.optional_vars, self.type_of(node.context_expr, scope), scope)
            elif isinstance(node, ast.Return) and scope.kind == 'function':
                ty = self.type_of(node.value, scope) if node.value is not None else NONE
                if ty is not None:
                    scope.returns, old = join(scope.returns, ty), scope.returns
                    self._changed |= scope.returns != old
            elif isinstance(node, ast.Call):
                self._bind_call(node, scope)

    def _bind(self, target: ast.expr, ty: Ty | None, scope: Scope) -> None:
        if isinstance(target, ast.Name):
            self._update(scope.names, target.id, ty)
        elif isinstance(target, (ast.Tuple, ast.List)):
            items = ty.items if ty is not None and ty.kind in ('tuple', 'list') else None
            for i, elt in enumerate(target.elts):
                fits = items is not None and len(items) == len(target.elts)
                self._bind(elt, (items[i] if fits else UNKNOWN) if ty is not None else None,
                           scope)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                and scope.cls is not None and scope.params \
                and target.value.id == scope.params[0]:
            self._update(scope.cls.attrs, target.attr, ty)

    def _element(self, iterable: ast.expr, scope: Scope) -> Ty | None:
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) \
                and iterable.func.id == 'range':
            return Ty('builtin', 'int')
        ty = self.type_of(iterable, scope)
        if ty is not None and ty.kind in ('tuple', 'list') and ty.items:
            first = ty.items[0]
            return first if all(i == first for i in ty.items) else UNKNOWN
        return None if ty is None else UNKNOWN

    def _bind_call(self, node: ast.Call, scope: Scope) -> None:
        """Our function's unannotated parameters take the types of their arguments."""
        callee = self.type_of(node.func, scope)
        target = self.callee_scope(callee)
        if target is None:
            return
        params = target.params[1:] if target.cls is not None else target.params
        for param, arg in zip(params, node.args, strict=False):
            if isinstance(arg, ast.Starred):
                break
            if param not in target.annotated:
                self._update(target.names, param, self.type_of(arg, scope))
        for keyword in node.keywords:
            if keyword.arg in params and keyword.arg not in target.annotated:
                self._update(target.names, keyword.arg, self.type_of(keyword.value, scope))

    def callee_scope(self, callee: Ty | None) -> Scope | None:
        """The function of ours a call runs (a class: its __init__)."""
        if callee is None or callee.kind not in ('def', 'ourbound'):
            return None
        scope = self.by_id[callee.name]
        if scope.kind == 'class':
            return scope.defs.get('__init__')
        return scope

    # -- expressions ---------------------------------------------------------------------
    def type_of(self, node: ast.expr, scope: Scope) -> Ty | None:
        """The type of an expression; None: not known yet (during inference)."""
        if isinstance(node, ast.Constant):
            if node.value is None:
                return NONE
            return Ty('builtin', type(node.value).__name__)
        if isinstance(node, ast.JoinedStr):
            return Ty('builtin', 'str')
        if isinstance(node, ast.Name):
            return self.resolve(node.id, scope)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.type_of(node.value, scope), node.attr)
        if isinstance(node, ast.Call):
            return self._call(node, scope)
        if isinstance(node, ast.Subscript):
            value = self.type_of(node.value, scope)
            if value is not None and value.kind == 'tuple' and value.items is not None \
                    and isinstance(node.slice, ast.Constant) \
                    and isinstance(node.slice.value, int) \
                    and -len(value.items) <= node.slice.value < len(value.items):
                return value.items[node.slice.value]
            if value == Ty('inst', 'Dims') and not isinstance(node.slice, ast.Slice):
                return Ty('builtin', 'int')
            return None if value is None else UNKNOWN
        if isinstance(node, ast.BinOp):
            return self._binop(node, scope)
        if isinstance(node, ast.UnaryOp):
            operand = self.type_of(node.operand, scope)
            if isinstance(node.op, ast.Not):
                return Ty('builtin', 'bool')
            return operand if operand == Ty('builtin', 'int') else UNKNOWN
        if isinstance(node, ast.Compare):
            return Ty('builtin', 'bool')
        if isinstance(node, ast.BoolOp):
            types = [self.type_of(v, scope) for v in node.values]
            return UNKNOWN if UNKNOWN in types else _join_all(types)
        if isinstance(node, ast.IfExp):
            return join(self.type_of(node.body, scope), self.type_of(node.orelse, scope))
        if isinstance(node, (ast.Tuple, ast.List)):
            items = tuple(self.type_of(e, scope) for e in node.elts)
            if None in items:
                return None
            if isinstance(node, ast.List) and not items:
                return Ty('list')  # filled later: length unknown
            return Ty('tuple' if isinstance(node, ast.Tuple) else 'list', items=items)
        if isinstance(node, ast.ListComp):
            return self._comprehension(node, scope)
        if isinstance(node, ast.NamedExpr):
            return self.type_of(node.value, scope)
        return UNKNOWN

    def _comprehension(self, node: ast.ListComp, scope: Scope) -> Ty | None:
        """[e for x in (a, b, c)]: a list of three; otherwise of unknown length."""
        (gen, *more) = node.generators
        if not more and not gen.ifs and isinstance(gen.iter, (ast.Tuple, ast.List)):
            item = self.type_of(node.elt, scope)
            return None if item is None else Ty('list', items=(item,) * len(gen.iter.elts))
        return Ty('list')

    def _binop(self, node: ast.BinOp, scope: Scope) -> Ty | None:
        left, right = self.type_of(node.left, scope), self.type_of(node.right, scope)
        integer = Ty('builtin', 'int')
        if isinstance(node.op, _INT_OPS) and integer in (left, right):
            return integer
        if left == right and left in (integer, Ty('builtin', 'str')):
            return left if not isinstance(node.op, ast.Div) else Ty('builtin', 'float')
        return None if None in (left, right) else UNKNOWN

    def _call(self, node: ast.Call, scope: Scope) -> Ty | None:
        callee = self.type_of(node.func, scope)
        if callee is None:
            return None
        if callee.kind == 'trt':
            made = self.binding.cls(callee.name) if callee.name else None
            return Ty('inst', made.__qualname__) if made is not None else UNKNOWN
        if callee.kind == 'bound':
            sigs = signatures(self.binding.member(callee.name, callee.attr))
            return self.binding_type(sigs[0].returns) if sigs else UNKNOWN
        if callee.kind == 'def' and self.by_id[callee.name].kind == 'class':
            return Ty('ours', callee.name)
        if callee.kind in ('def', 'ourbound'):
            return self.by_id[callee.name].returns
        if callee.kind == 'importer':
            return Ty('trt')
        if callee.kind == 'builtinfn':
            if callee.name in ('tuple', 'list', 'sorted'):
                return Ty('tuple' if callee.name == 'tuple' else 'list')
            return Ty('builtin', _BUILTIN_RESULTS[callee.name]) \
                if callee.name in _BUILTIN_RESULTS else UNKNOWN
        return UNKNOWN

    def binding_type(self, annotation: str) -> Ty:
        """The type of a value the binding declares (a return or property type)."""
        kind = self.binding.kind(annotation)
        if kind == 'None':
            return NONE
        if kind == 'sequence':
            return Ty('list')
        if kind in ('int', 'float', 'bool', 'str'):
            return Ty('builtin', kind)
        if kind in ('any', 'buffer'):
            return UNKNOWN
        return Ty('inst', kind)

    def attribute(self, base: Ty | None, attr: str) -> Ty | None:
        if base is None:
            return None
        if base.kind == 'trt':
            return self._trt_attribute(base.name, attr)
        if base.kind == 'inst':
            return self._member(base.name, attr)
        if base.kind == 'ours':
            return self._our_attribute(self.by_id[base.name], attr)
        if base.kind == 'pymod' and base.name == 'importlib' and attr == 'import_module':
            return Ty('importer')
        return UNKNOWN

    def _trt_attribute(self, path: str, attr: str) -> Ty:
        owner = self.binding.trt if not path else self.binding.cls(path)
        member = getattr(owner, attr, None)
        full = f'{path}.{attr}' if path else attr
        if member is None:
            return UNKNOWN
        if isinstance(member, type):
            return Ty('trt', full)
        if isinstance(member, str):
            return Ty('builtin', 'str')
        if self.binding.cls(type(member).__qualname__) is type(member):
            return Ty('inst', type(member).__qualname__)  # an enum member
        return Ty('trt', full) if callable(member) else UNKNOWN

    def _member(self, path: str, attr: str) -> Ty:
        member = self.binding.member(path, attr)
        if member is None:
            return UNKNOWN
        if isinstance(member, property):
            return self.binding_type(self.binding.property_types(member)[0])
        if isinstance(member, type):
            return Ty('trt', f'{path}.{attr}')
        if callable(member):
            return Ty('bound', path, attr)
        cls = type(member).__qualname__
        return Ty('inst', cls) if self.binding.cls(cls) is type(member) else UNKNOWN

    def _our_attribute(self, cls: Scope, attr: str) -> Ty | None:
        for scope in [cls, *cls.our_bases]:
            if attr in scope.defs:
                return Ty('ourbound', scope.defs[attr].id)
            if attr in scope.attrs:
                return scope.attrs[attr]
        if cls.trt_base:
            return self._member(cls.trt_base, attr)
        return UNKNOWN


def _join_all(types: list[Ty | None]) -> Ty | None:
    result: Ty | None = None
    for ty in types:
        if ty is None:
            return None
        result = join(result, ty)
    return result
