"""Class names: from a labels file or from the model's metadata."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

from yolo_trt_ros.core.errors import LabelsError, one_line
from yolo_trt_ros.core.files import TEXT_FILE_LIMIT, FileError, read_regular


def _from_mapping(names: dict, source: str) -> list[str]:
    try:
        by_id = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError) as exc:
        raise LabelsError(f'{source}: class ids must be integers: {exc}') from exc
    if sorted(by_id) != list(range(len(by_id))):
        raise LabelsError(f'{source}: class ids must run 0..{len(by_id) - 1} without gaps')
    return [by_id[i] for i in range(len(by_id))]


def _normalise(names, source: str) -> list[str]:
    if isinstance(names, dict) and 'names' in names:  # an Ultralytics data YAML
        names = names['names']
    if isinstance(names, dict):
        return _from_mapping(names, source)
    if isinstance(names, list) and all(isinstance(n, (str, int, float)) for n in names):
        return [str(n) for n in names]
    raise LabelsError(f'{source}: expected a list of names or a mapping id -> name')


def load_labels(path: str | Path) -> list[str]:
    """Read class names: YAML (.yaml/.yml: a list, a mapping id -> name, or a data file
    with a `names` key) or plain text (one name a line, blank lines ignored)."""
    path = Path(path)
    try:
        text = read_regular(path, TEXT_FILE_LIMIT, 'labels file').decode('utf-8')
    except FileError as exc:
        raise LabelsError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise LabelsError(f'labels file {path} is not UTF-8 text: {exc.reason}') from None
    if path.suffix.lower() in ('.yaml', '.yml'):
        try:
            names = _normalise(yaml.safe_load(text), str(path))
        except yaml.YAMLError as exc:
            raise LabelsError(f'{path}: invalid YAML: {one_line(exc)}') from exc
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise LabelsError(f'labels file {path} holds no class names')
    return names


def labels_from_metadata(metadata: dict[str, str]) -> list[str] | None:
    """Class names from ONNX/engine metadata: our JSON list, or the Python-literal dict
    that Ultralytics exports write. Parsed as data only (json / ast.literal_eval)."""
    raw = metadata.get('names')
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise LabelsError(f"model metadata 'names' is not a list or mapping: {exc}") from exc
    return _normalise(value, "model metadata 'names'")
