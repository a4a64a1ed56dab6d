"""The nodes' parameters as a user gets them wrong, checked in-process (core/serving): one
line naming the parameter, the value and what is accepted. test_detector_params.py keeps
the few cases that need a real node (exit code, rclpy's typing, run-time changes)."""
from __future__ import annotations

import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.exceptions import InvalidTopicNameException
from rclpy.validate_topic_name import validate_topic_name

from yolo_trt_ros.core.models.paths import default_model_path
from yolo_trt_ros.core.serving.config import (
    BUILD_PARAMETERS,
    DETECTOR_PARAMETERS,
    RUNTIME,
    builder_config,
    camera_names,
    detector_config,
    post_config,
    validate_topic,
)
from yolo_trt_ros.core.serving.params import checked_value, unknown_names

COCO = [f'c{i}' for i in range(80)]
COCO[0], COCO[5] = 'person', 'bus'


@pytest.fixture
def given_ok(default_model) -> dict:
    return {'model': str(default_model), 'backend': 'onnxruntime'}


@pytest.mark.parametrize('name,value,expected', [
    ('conf_threshold', 'abc', "parameter conf_threshold: 'abc' is a string, expected a double"),
    ('classes', 'x', "parameter classes: 'x' is a string, expected an integer array (or an "
                     "integer)"),
    ('classes', [0.5], 'parameter classes: [0.5] is a double array, expected an integer array '
                       '(or an integer)'),
    ('compressed', 1, 'parameter compressed: 1 is an integer, expected a bool'),
])
def test_a_wrong_type_is_one_line(name, value, expected):
    with pytest.raises(ValueError) as exc:
        checked_value(name, value, DETECTOR_PARAMETERS[name])
    assert str(exc.value) == expected


def test_values_rclpy_hands_back_are_taken_as_the_parameter_kind():
    assert checked_value('conf_threshold', 1, DETECTOR_PARAMETERS['conf_threshold']) == 1.0
    assert checked_value('classes', 5, DETECTOR_PARAMETERS['classes']) == [5]  # classes:=5
    assert checked_value('classes', array.array('q', [1, 2]),
                         DETECTOR_PARAMETERS['classes']) == [1, 2]
    assert checked_value('classes', [], DETECTOR_PARAMETERS['classes']) == []
    assert checked_value('classes', None, DETECTOR_PARAMETERS['classes']) is None  # unset


@pytest.mark.parametrize('values,expected', [
    ({'image_topics': '1bad topic!'}, "parameter image_topics: '1bad topic!' is not a valid "
                                      'topic'),
    ({'image_topics': 'cam,cam'}, "parameter image_topics: ['cam'] given more than once"),
    ({'image_topics': ' , '}, 'parameter image_topics: no topic given'),
    ({'max_detections': 10**12}, 'parameter max_detections: 1000000000000 is outside 1..'),
    ({'qos_reliability': 'sometimes'}, "parameter qos_reliability: 'sometimes' is not auto, "
                                       'reliable or best_effort'),
    ({'qos_depth': 0}, 'parameter qos_depth: 0 is outside 1..100'),
    ({'conf_threshold': 1.5}, 'parameter conf_threshold must be in [0, 1], got 1.5'),
    ({'output_format': 'yolo9000'}, "parameter output_format: 'yolo9000' is not auto, yolov8"),
    ({'max_image_pixels': 0}, 'parameter max_image_pixels: 0 must be at least 1'),
    ({'camera_names': 'a,b', 'image_topics': 'x'}, 'parameter camera_names: 2 names for 1 '
                                                   'image_topics'),
    ({'backend': 'gpu'}, "parameter backend: 'gpu' is not auto, tensorrt or onnxruntime"),
    ({'precision': 'fp64'}, "parameter precision: 'fp64' is not fp32, fp16 or int8"),
    ({'dynamic': '1x2'}, "dynamic profile '1x2': expected MIN:OPT:MAX"),
    ({'opt_level': 9}, 'parameter builder optimisation level 9: use 0..5'),
    ({'tracker': 'sort'}, "parameter tracker: 'sort' is not none, bytetrack or botsort"),
    ({'tracker': 'bytetrack', 'track_low_thresh': 0.6}, 'parameter track_low_thresh: 0.6 is '
                                                        'above track_high_thresh 0.25'),
    ({'tracker': 'botsort', 'gmc_method': 'orb'}, "parameter gmc_method: 'orb' is not "
                                                  'sparseOptFlow or none'),
    ({'tracker': 'bytetrack', 'track_buffer': 0}, 'parameter track_buffer: 0 must be at least 1'),
    ({'tracker': 'bytetrack', 'match_thresh': 2.0}, 'parameter match_thresh: 2.0 is outside [0, 1]'),
    ({'tracker': 'bytetrack', 'conf_threshold': 1.5}, 'parameter conf_threshold must be in [0, 1]'),
    ({'tracker': 'bytetrack', 'track_reset_gap_s': 0.0}, 'parameter track_reset_gap_s: 0.0 must be '
                                                         'positive'),
    # with tracker none too (a hostile user's attack: kept, refused only when turned on)
    ({'tracker': 'none', 'track_buffer': -3}, 'parameter track_buffer: -3 must be at least 1'),
    ({'tracker': 'none', 'gmc_method': 'bogus'}, "parameter gmc_method: 'bogus' is not"),
    ({'depth_topics': 'a,b'}, 'parameter depth_topics: 2 entries for 1 image_topics (one per '
                              'camera'),
    ({'depth_topics': '1bad'}, "parameter depth_topics: '1bad' is not a valid topic name"),
    ({'depth_topics': 'd', 'depth_slop': -1.0}, 'parameter depth_slop: -1.0 must be 0 or more'),
    ({'image_topics': 'a/image,b/image', 'depth_topics': ',b/depth', 'camera_info_topics': 'x,'},
     "parameter camera_info_topics: 'x' is given for camera 0, which has no depth topic"),
    ({'depth_min_m': 5.0, 'depth_max_m': 1.0}, 'must satisfy 0 <= min < max (metres)'),
])
def test_bad_detector_parameters_are_one_line(given_ok, values, expected):
    with pytest.raises(ValueError) as exc:
        detector_config({**given_ok, **values})
    assert expected in str(exc.value)
    assert '\n' not in str(exc.value)


def test_model_and_engine_paths_are_checked(given_ok, tmp_path):
    with pytest.raises(ValueError, match=f'parameter model: {tmp_path} is a directory'):
        detector_config({**given_ok, 'model': str(tmp_path)})
    with pytest.raises(ValueError, match=f'parameter model: {tmp_path}/gone.onnx does not'):
        detector_config({**given_ok, 'model': f'{tmp_path}/gone.onnx'})
    gone = f'{tmp_path}/gone.engine'
    with pytest.raises(ValueError, match=f'parameter engine_path: {gone} does not exist'):
        detector_config({**given_ok, 'backend': 'auto', 'engine_path': gone})
    # backend onnxruntime needs no engine: a stale engine_path is no reason to refuse
    assert detector_config({**given_ok, 'engine_path': gone}).detector.engine is not None


def test_a_good_configuration_reads_every_value(given_ok):
    config = detector_config({**given_ok, 'image_topics': 'front/image, back/image',
                              'compressed': True, 'conf_threshold': 0.5, 'qos_depth': 3})
    assert config.topics == ('front/image', 'back/image')
    assert config.camera_names == ('front', 'back')
    assert config.compressed and config.qos_depth == 3
    assert config.detector.post.conf_threshold == 0.5
    assert config.build.model == config.detector.model
    assert builder_config({'linger_s': -1.0, **given_ok}).linger_s == 0.0


def test_tracking_and_depth_configuration(given_ok):
    config = detector_config({**given_ok, 'image_topics': 'front/image,back/image',
                              'depth_topics': 'front/depth/image_rect_raw,',
                              'tracker': 'bytetrack', 'conf_threshold': 0.5})
    assert config.depth.topics == ('front/depth/image_rect_raw', '')
    assert config.depth.info_topics == ('front/depth/camera_info', '')  # the sibling topic
    assert config.depth.enabled(0) and not config.depth.enabled(1)
    # With a tracker the detector keeps what ByteTrack's second stage needs.
    assert config.detector.post.conf_threshold == 0.1
    assert post_config(runtime(conf_threshold=0.5), COCO).conf_threshold == 0.5  # no tracker
    assert detector_config({**given_ok, 'depth_topics': 'depth', 'camera_info_topics': 'info'}
                           ).depth.info_topics == ('info',)


def test_the_default_model_missing_points_at_fetch_assets(monkeypatch, tmp_path):
    monkeypatch.setenv('YOLO_TRT_ROS_HOME', str(tmp_path))
    with pytest.raises(ValueError, match='run `yolo-trt fetch-assets`'):
        detector_config({})
    assert str(default_model_path()).startswith(str(tmp_path))


def runtime(**values) -> dict:
    return {name: values.get(name, DETECTOR_PARAMETERS[name].default) for name in RUNTIME}


@pytest.mark.parametrize('values,expected', [
    ({'classes': [999]}, 'parameter classes: [999] not in 0..79 (the model has 80 classes)'),
    ({'classes': [-1]}, 'parameter classes: [-1] not in 0..79'),
    ({'classes_by_name': ['persn']}, "parameter classes_by_name: ['persn'] are not class names"),
])
def test_classes_are_checked_against_the_model(values, expected):
    with pytest.raises(ValueError, match=expected.replace('[', r'\[').replace(']', r'\]')
                       .replace('(', r'\(').replace(')', r'\)')):
        post_config(runtime(**values), COCO)


def test_classes_and_names_combine():
    post = post_config(runtime(classes=[5], classes_by_name=['person']), COCO)
    assert post.classes == (0, 5)
    assert post_config(runtime(classes=[]), COCO).classes is None


def test_a_misspelt_parameter_gets_the_closest_name():
    assert unknown_names({'conf_treshold', 'model', 'force'},
                         {**BUILD_PARAMETERS, **DETECTOR_PARAMETERS}, others={'force'}) == ["'conf_treshold' (did you mean 'conf_threshold'?)"]


def test_camera_names():
    assert camera_names(('image',)) == ('',)
    assert camera_names(('a/image', 'b/image')) == ('a', 'b')
    assert camera_names(('image', 'other')) == ('camera0', 'camera1')


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='ab_1/~{}.é ', max_size=12))
def test_topic_names_are_judged_as_rcl_judges_them(name):
    try:
        validate_topic_name(name)
        # Refused later by rcl (repeated /: in the expanded name) or refused by its own rule
        # that it checks only from three characters on (~ then /).
        rcl_ok = '//' not in name and not (len(name) == 2 and name[0] == '~' and name != '~/')
    except InvalidTopicNameException:
        rcl_ok = False
    try:
        validate_topic(name)
        ours = True
    except ValueError:
        ours = False
    assert ours == rcl_ok, name


@pytest.mark.parametrize('name', ['image', '/cam/image_raw', '~/image', 'a/{ns}/b', 'a__b'])
def test_topic_names_rcl_accepts(name):
    validate_topic_name(name)
    validate_topic(name)
