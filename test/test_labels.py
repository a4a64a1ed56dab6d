"""Class names from files and model metadata."""
from __future__ import annotations

import json

import pytest

from yolo_trt_ros.core.errors import LabelsError
from yolo_trt_ros.core.pipeline.labels import labels_from_metadata, load_labels


@pytest.mark.parametrize('name,text', [
    ('l.txt', 'cat\n\ndog\nbird\n'),
    ('l.names', 'cat\ndog\nbird'),
    ('l.yaml', '- cat\n- dog\n- bird\n'),
    ('l.yml', '0: cat\n2: bird\n1: dog\n'),
    ('data.yaml', 'path: x\nnames:\n  0: cat\n  1: dog\n  2: bird\n'),
])
def test_label_files(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert load_labels(path) == ['cat', 'dog', 'bird']


@pytest.mark.parametrize('name,text,message', [
    ('e.txt', '\n\n', 'holds no class names'),
    ('g.yaml', '0: a\n2: c\n', 'class ids must run 0..1 without gaps'),
    ('k.yaml', 'x: a\n', 'class ids must be integers'),
    ('s.yaml', '"just a string"', 'expected a list of names or a mapping'),
    ('b.yaml', 'names: [a, b\n', 'invalid YAML'),
])
def test_bad_label_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LabelsError, match=message):
        load_labels(path)


def test_missing_label_file(tmp_path):
    with pytest.raises(LabelsError, match='cannot read labels file .*nope.txt'):
        load_labels(tmp_path / 'nope.txt')


def test_metadata_json_and_ultralytics_dict():
    assert labels_from_metadata({'names': json.dumps(['a', 'b'])}) == ['a', 'b']
    assert labels_from_metadata({'names': "{0: 'person', 1: 'bicycle'}"}) == ['person', 'bicycle']
    assert labels_from_metadata({}) is None
    with pytest.raises(LabelsError, match="model metadata 'names'"):
        labels_from_metadata({'names': '__import__("os").system("true")'})
