"""One source per default: the nodes, the launch arguments, the CLI and
config/detector.yaml all agree with yolo_trt_ros.core.defaults."""
from __future__ import annotations

from pathlib import Path

import yaml

from yolo_trt_ros import launch_args
from yolo_trt_ros.cli import build_parser
from yolo_trt_ros.core import defaults
from yolo_trt_ros.core.pipeline.results import PostprocessConfig
from yolo_trt_ros.core.serving.config import (
    BUILD_PARAMETERS,
    BUILDER_PARAMETERS,
    DETECTOR_PARAMETERS,
)

ROOT = Path(__file__).resolve().parents[1]
NODES = {
    'engine_builder': {**BUILD_PARAMETERS, **BUILDER_PARAMETERS},
    'detector': {**BUILD_PARAMETERS, **DETECTOR_PARAMETERS},
}
# Deliberate differences from a node's own default, each with its reason in the YAML.
YAML_OVERRIDES = {('engine_builder', 'linger_s')}


def yaml_values(text: str) -> dict[str, dict[str, object]]:
    """node -> parameter -> value, with `/**` applied to every node first."""
    doc = yaml.safe_load(text)
    shared = doc.get('/**', {}).get('ros__parameters', {})
    out = {}
    for node in NODES:
        section = doc.get(f'/**/{node}', {}).get('ros__parameters', {})
        out[node] = {k: v for k, v in {**shared, **section}.items() if k in NODES[node]}
    return out


def yaml_problems(text: str) -> list[str]:
    problems = []
    values = yaml_values(text)
    for node, table in NODES.items():
        for name, spec in table.items():
            default = spec.default
            if default is None:  # no default value: listed as a comment
                if f'# {name}: ' not in text:
                    problems.append(f'{node}.{name} is missing from detector.yaml')
            elif name not in values[node]:
                problems.append(f'{node}.{name} is missing from detector.yaml')
            elif values[node][name] != default and (node, name) not in YAML_OVERRIDES:
                problems.append(f'{node}.{name}: YAML {values[node][name]!r}, node {default!r}')
    return problems


def test_yaml_lists_every_parameter_with_the_node_default():
    assert yaml_problems((ROOT / 'config' / 'detector.yaml').read_text()) == []


def test_yaml_check_fails_on_a_drifted_or_missing_default():
    text = (ROOT / 'config' / 'detector.yaml').read_text()
    drifted = text.replace('conf_threshold: 0.25', 'conf_threshold: 0.3')
    assert 'detector.conf_threshold: YAML 0.3, node 0.25' in yaml_problems(drifted)
    missing = text.replace('    agnostic_nms: false\n', '')
    assert 'detector.agnostic_nms is missing from detector.yaml' in yaml_problems(missing)


def test_nodes_launch_arguments_and_cli_use_the_same_defaults():
    det = DETECTOR_PARAMETERS
    assert det['conf_threshold'].default == defaults.CONF_THRESHOLD == PostprocessConfig().conf_threshold
    assert det['iou_threshold'].default == defaults.IOU_THRESHOLD == PostprocessConfig().iou_threshold
    assert det['max_detections'].default == defaults.MAX_DETECTIONS == PostprocessConfig().max_detections
    assert BUILD_PARAMETERS['backend'].default == defaults.BACKEND
    assert BUILD_PARAMETERS['precision'].default == defaults.PRECISION
    args = {k: v for k, (v, _) in launch_args.LAUNCH_ARGUMENTS.items()}
    assert float(args['conf']) == defaults.CONF_THRESHOLD
    assert float(args['iou']) == defaults.IOU_THRESHOLD
    assert (args['backend'], args['precision']) == (defaults.BACKEND, defaults.PRECISION)
    detect = build_parser().parse_args(['detect', 'x.jpg'])
    assert (detect.conf, detect.iou, detect.max_det, detect.backend) == (
        defaults.CONF_THRESHOLD, defaults.IOU_THRESHOLD, defaults.MAX_DETECTIONS,
        defaults.BACKEND)
    assert build_parser().parse_args(['build']).precision == defaults.PRECISION
