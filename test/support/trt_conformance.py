"""Checks our TensorRT calls against a real TensorRT Python module, from its pybind
signatures. Run as a script in a process of its own (each TensorRT version is imported
alone): `python trt_conformance.py MODULE` prints a JSON list of problems.

What is checked, for every module of ours that talks to TensorRT:
- every `trt.X.Y` the code names exists (classes, enums and their members, functions);
- every method called on a TensorRT object exists on its class; the receiver's class is
  known from the variable's name (RECEIVERS); positional arity and keyword names must fit
  one of the method's pybind signatures;
- every method our subclasses of TensorRT interfaces override (progress monitor, logger,
  calibrator) exists in the base and takes the same parameters in the same order: TensorRT
  calls them positionally, so a swapped order is a silent bug (issue 9, defect 3).
"""
from __future__ import annotations

import ast
import importlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / 'yolo_trt_ros' / 'core'
MODULES = [CORE / 'backends' / 'tensorrt.py', CORE / 'backends' / 'trt_module.py',
           CORE / 'build' / 'trt_build.py', CORE / 'build' / 'calibrator.py']
# Variable (or self attribute) name -> the TensorRT class it holds in our code.
RECEIVERS = {
    'engine': 'ICudaEngine', 'context': 'IExecutionContext', 'ctx': 'IExecutionContext',
    'runtime': 'Runtime', 'builder': 'Builder', 'network': 'INetworkDefinition',
    'config': 'IBuilderConfig', 'parser': 'OnnxParser', 'profile': 'IOptimizationProfile',
    'error': 'ParserError', 'inp': 'ITensor', 'tensor': 'ITensor', 'timing': 'ITimingCache',
}
# `self.profile` is our InputProfile, not a TensorRT object.
SELF_RECEIVERS = {k: v for k, v in RECEIVERS.items() if k != 'profile'}
CONSTRUCTORS = {'Runtime', 'Builder', 'OnnxParser'}  # trt.X(...) calls X.__init__


@dataclass(frozen=True)
class Use:
    owner: str  # a TensorRT class, or 'module'
    attr: str  # dotted for module chains
    line: int
    module: str
    call: tuple[int, tuple[str, ...]] | None = None  # (positional count, keyword names)
    params: tuple[str, ...] | None = None  # for an override: our parameter names


def _chain(node: ast.AST) -> tuple[str | None, list[str]]:
    chain = []
    while isinstance(node, ast.Attribute):
        chain.append(node.attr)
        node = node.value
    return (node.id if isinstance(node, ast.Name) else None), chain[::-1]


def uses_in(path: Path) -> list[Use]:
    tree = ast.parse(path.read_text())
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    found: list[Use] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name, chain = _chain(base)
                if name == 'trt' and len(chain) == 1:
                    for item in node.body:  # _name: a helper of ours, no override
                        if isinstance(item, ast.FunctionDef) and item.name != '__init__' \
                                and not item.name.startswith('_'):
                            params = tuple(a.arg for a in item.args.args[1:])
                            found.append(Use(chain[0], item.name, item.lineno, path.name,
                                             params=params))
        if not isinstance(node, ast.Attribute):
            continue
        base, chain = _chain(node)
        if isinstance(node.ctx, ast.Store) and base != 'self':
            continue
        call = calls.get(id(node))
        arity = None if call is None else (
            sum(not isinstance(a, ast.Starred) for a in call.args)
            + sum(len(_starred_len(a)) for a in call.args if isinstance(a, ast.Starred)),
            tuple(k.arg for k in call.keywords if k.arg))
        if base == 'trt':
            if chain[-1] in CONSTRUCTORS and len(chain) == 1 and call is not None:
                found.append(Use(chain[0], '__init__', node.lineno, path.name, arity))
            found.append(Use('module', '.'.join(chain), node.lineno, path.name))
        elif base == 'self' and len(chain) == 2 and chain[0].lstrip('_') in SELF_RECEIVERS:
            found.append(Use(SELF_RECEIVERS[chain[0].lstrip('_')], chain[1], node.lineno,
                             path.name, arity))
        elif base in RECEIVERS and len(chain) == 1:
            found.append(Use(RECEIVERS[base], chain[0], node.lineno, path.name, arity))
    return found


def _starred_len(node: ast.Starred) -> list:
    # `*shapes` in our code unpacks (min, opt, max): three positional arguments.
    return [0, 0, 0]


_SIG = re.compile(r'^(?:\d+\. )?(\w+)\((.*)\) -> .*$')


def signatures(obj) -> list[list[tuple[str, bool]]]:
    """[(name, has default)] per pybind overload, without self."""
    sigs = []
    for line in (getattr(obj, '__doc__', '') or '').splitlines():
        m = _SIG.match(line.strip())
        if not m:
            continue
        params, depth, cur = [], 0, ''
        for ch in m.group(2):  # split on top-level commas
            depth += ch in '[(' or 0
            depth -= ch in '])' or 0
            if ch == ',' and depth == 0:
                params.append(cur)
                cur = ''
            else:
                cur += ch
        if cur.strip():
            params.append(cur)
        parsed = [(p.split(':')[0].strip(), '=' in p) for p in params]
        sigs.append([p for p in parsed if p[0] not in ('self', '*args', '**kwargs')])
    return sigs


def problems(trt, uses: list[Use]) -> list[str]:
    out = []
    for use in uses:
        where = f'{use.module}:{use.line}'
        obj = trt
        parts = use.attr.split('.') if use.owner == 'module' else [use.owner, use.attr]
        missing = False
        for part in parts:
            if not hasattr(obj, part):
                out.append(f'{where}: {".".join(parts)} does not exist')
                missing = True
                break
            obj = getattr(obj, part)
        if missing:
            continue
        sigs = signatures(obj)
        if use.params is not None:
            names = [[n for n, _ in s] for s in sigs]
            if list(use.params) not in names:
                out.append(f'{where}: {use.owner}.{use.attr} overridden with parameters '
                           f'{list(use.params)}, TensorRT declares {names}')
        elif use.call is not None and sigs:
            npos, keywords = use.call
            if not any(_fits(s, npos, keywords) for s in sigs):
                out.append(f'{where}: {use.owner}.{use.attr} called with {npos} positional '
                           f'and keywords {list(keywords)}; signatures: '
                           f'{[[n for n, _ in s] for s in sigs]}')
    return out


def _fits(sig: list[tuple[str, bool]], npos: int, keywords: tuple[str, ...]) -> bool:
    names = [n for n, _ in sig]
    if npos > len(sig) or any(k not in names[npos:] for k in keywords):
        return False
    required = {n for n, default in sig if not default}
    given = set(names[:npos]) | set(keywords)
    return required <= given


def all_uses(paths: list[Path] = MODULES) -> list[Use]:
    return [u for path in paths for u in uses_in(path)]


if __name__ == '__main__':
    # MODULE [FILE ...]: check FILEs instead of our modules (the test's negative cases).
    module = importlib.import_module(sys.argv[1])
    paths = [Path(p) for p in sys.argv[2:]] or MODULES
    print(json.dumps(sorted(set(problems(module, all_uses(paths))))))
