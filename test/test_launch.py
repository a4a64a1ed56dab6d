"""detect.launch.py checked statically (`launch` is not on PyPI), and `yolo-trt launch`
and `yolo-trt demo` run for real. The static checks fail if a name drifts between the
launch file, launch_args.py, config/detector.yaml, setup.py and the nodes."""
from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from rclpy.executors import SingleThreadedExecutor
from support.ros import (
    Client,
    NodeProcess,
    change_state,
    lifecycle_state,
    make_node,
    ros_context,
    spin_until,
)
from vision_msgs.msg import Detection2DArray

from yolo_trt_ros import launch_args
from yolo_trt_ros.core.serving.config import (
    BUILD_PARAMETERS,
    BUILDER_PARAMETERS,
    DETECTOR_PARAMETERS,
)
from yolo_trt_ros.core.stopping import stopped_by_signal
from yolo_trt_ros.ros import image_source_node

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / 'launch' / 'detect.launch.py'
NODE_PARAMETERS = {
    'engine_builder': {**BUILD_PARAMETERS, **BUILDER_PARAMETERS},
    'detector': {**BUILD_PARAMETERS, **DETECTOR_PARAMETERS},
    'image_source': dict(image_source_node.PARAMETERS),
}
REQUIRED_ARGUMENTS = {'model', 'image_topic', 'compressed', 'precision', 'conf', 'iou',
                      'backend', 'params_file', 'namespace'}


def console_scripts() -> set[str]:
    tree = ast.parse((ROOT / 'setup.py').read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and ' = ' in node.value:
            scripts.add(node.value.split(' = ')[0].strip())
    return scripts


def launch_problems(launch_source: str, yaml_text: str, arguments: dict, builder_map: dict,
                    detector_map: dict, param_types: dict) -> list[str]:
    """Every way the launch file, YAML and nodes can disagree, as readable problems."""
    problems = []
    tree = ast.parse(launch_source)  # it parses
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]

    def kwargs(call, name):
        return [k.value for k in call.keywords if k.arg == name]

    nodes = {}
    for call in calls:
        if getattr(call.func, 'id', None) == 'Node':
            exe = [v.value for v in kwargs(call, 'executable') if isinstance(v, ast.Constant)]
            name = [v.value for v in kwargs(call, 'name') if isinstance(v, ast.Constant)]
            if not name and kwargs(call, 'name') and exe:
                name = exe  # a planned name (launch_plan): engine_builder[_<gpu>], detector[_<i>]
            if not exe or not name:
                problems.append('a Node without a literal executable and name')
                continue
            nodes[name[0]] = exe[0]
    scripts = console_scripts()
    for exe in nodes.values():
        if exe not in scripts:
            problems.append(f'executable {exe} is not a console script in setup.py')
    if set(nodes) != {'engine_builder', 'detector'}:
        problems.append(f'launch starts {sorted(nodes)}, expected engine_builder and detector')
    # Every argument it reads is declared (the file declares all of LAUNCH_ARGUMENTS).
    read = {c.args[0].value for c in calls if getattr(c.func, 'id', None) == 'LaunchConfiguration'
            and c.args and isinstance(c.args[0], ast.Constant)}
    read |= set(builder_map.values()) | set(detector_map.values())
    problems += [f'launch argument {a} is read but not declared' for a in sorted(read - set(arguments))]
    problems += [f'required launch argument {a} is missing'
                 for a in sorted(REQUIRED_ARGUMENTS - set(arguments))]
    if 'LAUNCH_ARGUMENTS.items()' not in launch_source or 'DeclareLaunchArgument' not in launch_source:
        problems.append('the launch file does not declare LAUNCH_ARGUMENTS')
    if 'validate(' not in launch_source:
        problems.append('the launch file does not validate its arguments before the nodes')
    if 'target_action=detector' not in launch_source:
        problems.append("the launch file ignores the detector's exit status")
    # The real `ros2 launch` (helper, Kilted and Jazzy): Ctrl-C during the build was
    # reported as a failed build (exit 1); and the profile set for the whole launch made a
    # second include of this file take the first one's dds_profile for the user's own.
    if 'stopped_by_signal(event.returncode)' not in launch_source:
        problems.append('the launch file calls a builder that Ctrl-C stopped a failure')
    if 'SetEnvironmentVariable' in launch_source or '**dds}' not in launch_source:
        problems.append("the launch file sets the DDS profile beyond its own nodes")
    # Every parameter it sets is one the node declares, with the node's type.
    for node, mapping in (('engine_builder', builder_map), ('detector', detector_map)):
        for param in mapping:
            if param not in NODE_PARAMETERS[node]:
                problems.append(f'launch sets {node}.{param}, which the node does not declare')
            elif type(NODE_PARAMETERS[node][param].default) is not param_types.get(param):
                problems.append(f'{node}.{param}: launch type {param_types.get(param)} differs '
                                f'from the node default {NODE_PARAMETERS[node][param].default!r}')
    # Every key in the YAML is a parameter of the node(s) it is for; `/**` keys of one at
    # least. A key a launch argument sets must sit under `/**`: rcl lets a node-specific
    # section beat command-line overrides, which would silently ignore the argument.
    doc = yaml.safe_load(yaml_text)
    by_args = {'engine_builder': set(builder_map), 'detector': set(detector_map)}
    for key, section in doc.items():
        params = section['ros__parameters']
        if key == '/**':
            for param in params:
                if not any(param in NODE_PARAMETERS.get(n, {}) for n in nodes):
                    problems.append(f'YAML /**: {param} is a parameter of no launched node')
            continue
        target = key.rsplit('/', 1)[-1]
        if target not in NODE_PARAMETERS:
            problems.append(f'YAML section {key} names no node of the launch file')
            continue
        for param in params:
            if param not in NODE_PARAMETERS[target]:
                problems.append(f'YAML {key}: {param} is not a parameter of {target}')
            elif param in by_args.get(target, ()):
                problems.append(f'YAML {key}: {param} is set by a launch argument; it must '
                                f'sit under /** or the argument is ignored')
    return problems


def real_inputs():
    return (LAUNCH_FILE.read_text(), (ROOT / 'config' / 'detector.yaml').read_text(),
            launch_args.LAUNCH_ARGUMENTS, launch_args.BUILDER_FROM_ARGS,
            launch_args.DETECTOR_FROM_ARGS, launch_args.PARAM_TYPES)


@pytest.mark.parametrize('status,stopped', [
    (130, True), (143, True), (-2, True), (-15, True),  # its handler's, or the signal's
    (0, False), (1, False), (2, False), (-9, False), (-11, False)])
def test_a_stop_by_ctrl_c_or_sigterm_is_told_from_a_failure(status, stopped):
    assert stopped_by_signal(status) is stopped


def test_launch_file_yaml_and_nodes_agree():
    assert launch_problems(*real_inputs()) == []


@pytest.mark.parametrize('drift,expected', [
    ('yaml_key', 'YAML /**/detector: max_detection is not a parameter of detector'),
    ('yaml_shadow', 'YAML /**/detector: iou_threshold is set by a launch argument'),
    ('executable', 'executable detectr is not a console script in setup.py'),
    ('param', 'launch sets detector.confidence, which the node does not declare'),
    ('argument', "launch argument image is read but not declared"),
    ('type', 'detector.iou_threshold: launch type'),
    ('validate', 'does not validate its arguments'),
    ('stop', 'calls a builder that Ctrl-C stopped a failure'),
    ('profile', 'sets the DDS profile beyond its own nodes'),
])
def test_static_check_fails_when_a_name_drifts(drift, expected):
    source, yaml_text, arguments, builder_map, detector_map, types = real_inputs()
    detector_map, types = dict(detector_map), dict(types)
    if drift == 'yaml_key':
        yaml_text = yaml_text.replace('    max_detections:', '    max_detection:')
    elif drift == 'yaml_shadow':
        yaml_text = yaml_text.replace('    engine_path: ""', '    engine_path: ""\n    iou_threshold: 0.5')
    elif drift == 'executable':
        source = source.replace("executable='detector'", "executable='detectr'")
    elif drift == 'param':
        detector_map['confidence'] = detector_map.pop('conf_threshold')
        types['confidence'] = float
    elif drift == 'argument':
        source = source.replace("LaunchConfiguration('params_file')", "LaunchConfiguration('image')")
    elif drift == 'type':
        types['iou_threshold'] = str
    elif drift == 'validate':
        source = source.replace('validate(', 'print(')
    elif drift == 'stop':
        source = source.replace('stopped_by_signal(event.returncode)', 'False')
    elif drift == 'profile':
        source = source.replace('**dds}', '}')
    problems = launch_problems(source, yaml_text, arguments, builder_map, detector_map, types)
    assert any(expected in p for p in problems), problems


class YoloTrt:
    """`yolo-trt ARGS` in its own process; output to a file, so that reading it can never
    block on a pipe that a grandchild still holds."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.out = tempfile.TemporaryFile('w+')
        self.proc = subprocess.Popen([sys.executable, '-m', 'yolo_trt_ros.cli', *args],
                                     stdout=self.out, stderr=subprocess.STDOUT, text=True, cwd=cwd)

    def finish(self, timeout: float) -> tuple[int, str]:
        """(exit status, output); an AssertionError with the output and the processes
        still running where it did not end within timeout (then it is killed). timeout 0:
        kill it now if it runs (a test's cleanup)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if timeout == 0:
                raise
            running = subprocess.run(['ps', '-o', 'pid,ppid,stat,etime,args', '--ppid',
                                      str(self.proc.pid), '-p', str(self.proc.pid)],
                                     capture_output=True, text=True).stdout
            self.out.seek(0)
            raise AssertionError(f'yolo-trt did not end within {timeout:g} s; still '
                                 f'running:\n{running}\noutput:\n{self.out.read()}') from None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.out.seek(0)
        return self.proc.returncode, self.out.read()


def test_yolo_trt_launch_runs_the_pair_and_stops_on_sigterm(bus_jpg, tmp_path):
    launch = YoloTrt('launch', 'namespace:=robot1', f'cache_dir:={tmp_path}', 'conf:=0.5')
    try:
        with ros_context() as context:
            executor = SingleThreadedExecutor(context=context)
            node = make_node(context, 'launch_client', executor)
            got: list[Detection2DArray] = []
            node.create_subscription(Detection2DArray, '/robot1/detections', got.append, 10)
            spin_until(executor, lambda: node.count_subscribers('/robot1/image') > 0,
                       timeout=60, what='the detector in namespace robot1')
            with NodeProcess('yolo_trt_ros.ros.image_source_node',
                             {'path': str(bus_jpg), 'rate': 5.0},
                             ros_args=['-r', '__ns:=/robot1']):
                spin_until(executor, lambda: got, timeout=30, what='detections')
            executor.shutdown()
        assert min(d.results[0].hypothesis.score for d in got[0].detections) > 0.5  # conf:=0.5
        start = time.monotonic()
        launch.proc.send_signal(signal.SIGTERM)
        rc, out = launch.finish(timeout=15)
        assert time.monotonic() - start < 8  # both nodes stopped within a few seconds
        assert rc == 0, out
        assert 'built' in out and 'backend onnxruntime' in out
    finally:
        launch.finish(timeout=0)


def test_yolo_trt_launch_stops_when_the_build_fails(tmp_path):
    (tmp_path / 'junk.onnx').write_bytes(b'not a model')
    rc, out = YoloTrt('launch', f'model:={tmp_path}/junk.onnx', 'backend:=tensorrt').finish(60)
    assert rc == 1
    assert 'engine_builder failed (exit 1); not starting the detector' in out
    assert re.search(r'junk.onnx is not an ONNX model', out)


def test_yolo_trt_launch_with_a_pipe_for_a_model_stops_at_once(tmp_path):
    # Issue 17, failure 4: a FIFO as model:= hung the launch forever.
    os.mkfifo(tmp_path / 'model.onnx')
    rc, out = YoloTrt('launch', f'model:={tmp_path}/model.onnx').finish(60)
    assert rc == 2, out
    assert 'model.onnx is not a regular file (a pipe or a device)' in out
    assert 'engine_builder failed (exit 2); not starting the detector' in out


@pytest.mark.parametrize('item,expected', [
    ('modle:=x.onnx', "unknown launch argument 'modle' (did you mean 'model'?)"),
    ('cof:=0.3', "unknown launch argument 'cof' (did you mean 'conf'?)"),
    ('conf_threshold:=0.9', "unknown launch argument 'conf_threshold': conf_threshold is a "
                            "node parameter; its launch argument is 'conf'"),
    ('max_detections:=5', 'max_detections is a node parameter without a launch argument; set '
                          'it in a params_file'),
    ('zzzz:=1', "unknown launch argument 'zzzz'; known: namespace, model,"),
    ('launch-prefix:=gdb', "unknown launch argument 'launch-prefix'"),  # ros2 launch's own
])
def test_yolo_trt_launch_refuses_unknown_arguments(item, expected):
    """Issue 18, edge 1: `cof:=0.3` and `conf_threshold:=0.9` were ignored in silence."""
    rc, out = YoloTrt('launch', item).finish(30)
    assert rc == 2 and expected in out, out
    assert out.startswith('yolo-trt launch: unknown launch argument')
    assert len(out.strip().splitlines()) == 1


def test_the_launch_file_refuses_what_it_does_not_declare():
    """detect.launch.py checks the command line's names with the same check_names, before
    any node starts, letting through what `ros2 launch` adds itself (launch is not on PyPI:
    this is static; the closing note of issue 18 has the run with the real ros2 launch)."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    nodes_fn = next(n for n in ast.walk(tree)
                    if isinstance(n, ast.FunctionDef) and n.name == '_nodes')
    first = nodes_fn.body[0].value
    assert isinstance(first, ast.Call) and first.func.id == 'check_names'
    assert ast.unparse(first.args[0]) == '_given(context)'
    assert ast.unparse(first.keywords[0].value) == 'ROS2_LAUNCH_OWN'
    launch_args.check_names(['conf', 'launch-prefix'], also=launch_args.ROS2_LAUNCH_OWN)
    with pytest.raises(ValueError, match="'cof' \\(did you mean 'conf'\\?\\)"):
        launch_args.check_names(['conf', 'cof'], also=launch_args.ROS2_LAUNCH_OWN)


def test_demo_prints_each_frame_and_saves_annotated_images(tmp_path):
    rc, out = YoloTrt('demo', '--save', str(tmp_path / 'out'), '--frames', '2',
                      cwd=tmp_path).finish(180)
    assert rc == 0, out
    lines = [line for line in out.splitlines() if line.startswith('frame ')]
    assert len(lines) == 2 and all('latency' in line and 'person' in line for line in lines)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['frame_001.jpg', 'frame_002.jpg']


@pytest.mark.parametrize('argument,expected', [
    ('conf:=abc', "launch argument conf: 'abc' is not a number in [0, 1]"),
    ('compressed:=maybe', "launch argument compressed: 'maybe' is not true or false"),
    ('qos_reliability:=sometimes', "launch argument qos_reliability: 'sometimes' is not auto"),
    ('qos_depth:=0', "launch argument qos_depth: '0' is not an integer in 1..100"),
    ('tracker:=sort', "launch argument tracker: 'sort' is not none, bytetrack or botsort"),
    ('depth_topic:=a,b', 'launch argument depth_topic: 2 entries for 1 image_topics'),
    # a hostile user's attack (helper): each of these was a traceback
    ('dds_profile:=bogus', "launch argument dds_profile: 'bogus' is not large_frames or "
                           'stock_cameras'),
    ('params_file:=/dev/zero', 'launch argument params_file: parameter file /dev/zero is not '
                               'a regular file'),
])
def test_yolo_trt_launch_validates_arguments_before_any_node_starts(argument, expected):
    rc, out = YoloTrt('launch', argument).finish(30)
    assert rc == 2 and expected in out, out
    assert 'engine_builder' not in out  # nothing was started


PARAMS_FILES = {  # a hostile user's attack (helper): rcl's refusals were tracebacks
    'list.yaml': ('[1, 2]\n', 'the file is not a mapping of node sections'),
    'scalar.yaml': ('hello\n', 'the file is not a mapping of node sections'),
    'broken.yaml': ('a: [1\n  b: {\n', 'is not YAML: while parsing a flow sequence'),
    'badrp.yaml': ('detector:\n  ros__parameters: [1, 2]\n',
                   'detector: ros__parameters is not a mapping of names to values'),
}


@pytest.mark.parametrize('name,value,expected', [
    ('namespace', '1bad', "namespace: '1bad' is not a namespace (a name token starts"),
    ('namespace', 'bad ns', "namespace: 'bad ns' is not a namespace (' ' is not a letter"),
    ('namespace', '/a//b', "namespace: '/a//b' is not a namespace (it repeats /"),
    ('namespace', '~', "namespace: '~' is not a namespace (it has ~ or {}"),
    ('image_topic', '{x}', "image_topic: '{x}' is not a topic name per camera (it has {}"),
    ('image_topic', 'a,,b', "image_topic: 'a,,b' is not a topic name per camera (an entry is "
                            'empty'),
    ('image_topic', '1bad', "image_topic: '1bad' is not a topic name per camera (a name token"),
    ('depth_topic', '{d}', "depth_topic: '{d}' is not a topic name per camera (it has {}"),
    *(('params_file', f'{{tmp}}/{name}', f'params_file: {{tmp}}/{name}{": " if "YAML" not in said else " "}'
       f'{said}') for name, (_, said) in PARAMS_FILES.items()),
    ('params_file', '{tmp}', 'params_file: parameter file {tmp} is a directory, not a file'),
])
def test_names_and_parameter_files_are_checked_before_any_node(name, value, expected, tmp_path):
    """A hostile user's attack (helper): a namespace or topic rcl refuses, and a parameter
    file that is not rcl's layout, ended each node in a traceback after the launch began."""
    for file, (text, _) in PARAMS_FILES.items():
        (tmp_path / file).write_text(text)
    values = {n: default for n, (default, _) in launch_args.LAUNCH_ARGUMENTS.items()}
    with pytest.raises(ValueError) as exc:
        launch_args.validate(dict(values, **{name: value.replace('{tmp}', str(tmp_path))}))
    assert str(exc.value).startswith(
        f"launch argument {expected.replace('{tmp}', str(tmp_path))}"), \
        str(exc.value)
    nested = tmp_path / 'nested.yaml'  # rcl's nested namespaces are a layout too
    nested.write_text('ns1:\n  detector:\n    ros__parameters:\n      conf_threshold: 0.3\n')
    launch_args.validate(dict(values, params_file=str(nested), namespace='/robot1/'))


def test_yolo_trt_launch_exits_non_zero_when_the_detector_fails(tmp_path):
    params = tmp_path / 'params.yaml'  # a mistake only the detector reads
    params.write_text(yaml.safe_dump({'/**/detector': {'ros__parameters': {
        'output_format': 'yolo9000'}}}))
    rc, out = YoloTrt('launch', f'params_file:={params}', 'backend:=onnxruntime',
                      f'cache_dir:={tmp_path}').finish(60)
    assert rc == 2, out
    assert "'yolo9000' is not auto" in out
    assert 'yolo-trt launch: detector exited with 2; stopping the other nodes' in out


# -- issue 12: workers:=N detector processes split the cameras -------------------------------

@pytest.mark.parametrize('topics,workers,cores,expected', [
    ('image', '1', 8, [{'name': 'detector'}]),
    ('image', '4', 8, [{'name': 'detector'}]),  # never more workers than cameras
    ('cam1/image_raw,cam2/image_raw,cam3/image_raw', '2', 8, [
        {'name': 'detector_0', 'image_topics': 'cam1/image_raw,cam2/image_raw',
         'camera_names': 'cam1,cam2'},
        {'name': 'detector_1', 'image_topics': 'cam3/image_raw', 'camera_names': 'cam3'}]),
    ('a,b,c,d', 'auto', 2, [
        {'name': 'detector_0', 'image_topics': 'a,b', 'camera_names': 'camera0,camera1'},
        {'name': 'detector_1', 'image_topics': 'c,d', 'camera_names': 'camera2,camera3'}]),
])
def test_worker_plan_keeps_every_camera_on_its_topics(topics, workers, cores, expected):
    assert launch_args.worker_plan(topics, workers, cores) == expected


@pytest.mark.parametrize('topics,workers,said', [
    ('image', '2', 'workers:=2 for 1 camera: starting 1 detector process (a worker serves '
                   'whole cameras)'),
    ('a,b', '3', 'workers:=3 for 2 cameras: starting 2 detector processes (a worker serves '
                 'whole cameras)'),
    ('a,b', '2', None), ('a,b,c', '2', None), ('image', 'auto', None), ('image', '1', None),
])
def test_more_workers_than_cameras_is_said(topics, workers, said):
    """workers:=2 with one camera started one process without a word (helper's attack)."""
    assert launch_args.worker_note(topics, workers) == said
    assert len(launch_args.worker_plan(topics, workers, 8)) == min(
        len(topics.split(',')), len(topics.split(',')) if workers == 'auto' else int(workers))


def test_worker_plan_splits_depth_with_the_cameras():
    plan = launch_args.worker_plan('a/image,b/image,c/image', '2', 8,
                                   depth='a/depth,,c/depth', info=',,c/info')
    assert [(w['image_topics'], w['depth_topics'], w['camera_info_topics']) for w in plan] == [
        ('a/image,b/image', 'a/depth,', ','), ('c/image', 'c/depth', 'c/info')]


def test_workers_is_validated_and_worker_parameters_come_from_the_detector_section():
    values = {name: default for name, (default, _) in launch_args.LAUNCH_ARGUMENTS.items()}
    for bad in ('0', 'many', '65'):
        with pytest.raises(ValueError, match=f"launch argument workers: '{bad}' is not auto"):
            launch_args.validate(dict(values, workers=bad))
    section = launch_args.node_section(ROOT / 'config' / 'detector.yaml')
    assert section['max_detections'] == DETECTOR_PARAMETERS['max_detections'].default
    assert 'model' not in section  # /** keys reach every node by themselves


def serve_two_cameras(executor, node, bus_jpg, check, timeout: float) -> None:
    """A launch of two workers for cam1 and cam2: wait until both subscribe, check(), then
    publish the bus photo on both at 5 Hz until each camera's detections arrive."""
    got: dict[str, list] = {'cam1': [], 'cam2': []}
    for cam, sink in got.items():
        node.create_subscription(Detection2DArray, f'/{cam}/detections', sink.append, 10)
    spin_until(executor, lambda: all(node.count_subscribers(f'/{c}/image_raw') > 0
                                     for c in got), timeout=timeout, what='both workers')
    check()
    cameras = [NodeProcess('yolo_trt_ros.ros.image_source_node',
                           {'path': str(bus_jpg), 'rate': 5.0},
                           ros_args=['-r', f'image:={c}/image_raw', '-r', f'__node:=camera_{c}'])
               for c in got]
    try:
        spin_until(executor, lambda: all(got.values()), timeout=60,
                   what='detections from both cameras')
    finally:
        for camera in cameras:
            camera.stop()


def test_two_workers_serve_two_cameras_on_the_usual_topics(bus_jpg, tmp_path):
    launch = YoloTrt('launch', 'image_topic:=cam1/image_raw,cam2/image_raw', 'workers:=2',
                     'backend:=onnxruntime', f'cache_dir:={tmp_path}')
    try:
        with ros_context() as context:
            executor = SingleThreadedExecutor(context=context)
            node = make_node(context, 'workers_client', executor)

            def named_workers():
                spin_until(executor, lambda: {'detector_0', 'detector_1'} <= set(
                    node.get_node_names()), timeout=30, what='nodes detector_0 and detector_1')
                assert 'detector' not in node.get_node_names()

            serve_two_cameras(executor, node, bus_jpg, named_workers, timeout=90)
            executor.shutdown()
        # Issue 17, failure 8: a worker killed was reported as "the detector exited with -9".
        (worker,) = node_pids('__node:=detector_1')  # /proc read with exits guarded
        os.kill(worker, signal.SIGKILL)
        rc, out = launch.finish(timeout=20)
        assert rc == 128 + signal.SIGKILL, out
        assert 'yolo-trt launch: detector_1 was killed by SIGKILL; stopping the other nodes' \
            in out
    finally:
        launch.finish(timeout=0)


def test_worker_sections_follow_rcl_matching_and_leave_launch_arguments_alone(tmp_path):
    """Review findings: camera_names from the parameters file, the namespace of a section,
    and launch arguments winning over the detector section with N workers as with one."""
    params = tmp_path / 'p.yaml'
    params.write_text(yaml.safe_dump({
        '/robot1/detector': {'ros__parameters': {'labels_file': 'r1.txt',
                                                 'camera_names': 'front,back'}},
        '/robot2/detector': {'ros__parameters': {'labels_file': 'r2.txt'}},
        '/**/detector': {'ros__parameters': {'conf_threshold': 0.9, 'max_detections': 7}}}))
    own = launch_args.node_section(params, 'robot1', skip=launch_args.DETECTOR_FROM_ARGS)
    assert own == {'labels_file': 'r1.txt', 'camera_names': 'front,back', 'max_detections': 7}
    plan = launch_args.worker_plan('a/image,b/image', '2', names=own['camera_names'])
    assert [w['camera_names'] for w in plan] == ['front', 'back']


def test_a_hung_detector_cannot_hang_yolo_trt_launch():
    """Review finding: after a signal, wait() blocked on a child that ignores SIGINT, so the
    SIGKILL after STOP_TIMEOUT_S never came."""
    import threading

    from yolo_trt_ros.launcher import STOP_TIMEOUT_S, Launcher, parse_assignments
    hung = subprocess.Popen([sys.executable, '-c', 'import signal, time; '
                             'signal.signal(signal.SIGINT, signal.SIG_IGN); '
                             'print("ready", flush=True); time.sleep(600)'],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert hung.stdout.readline().strip() == 'ready'
        launcher = Launcher(parse_assignments([]))
        launcher.children, launcher.detectors = [hung], {'detector': hung}
        threading.Timer(0.3, launcher.interrupt).start()
        start = time.monotonic()
        assert launcher.wait() == ('', 0)
        launcher.stop()
        assert hung.poll() is not None
        assert time.monotonic() - start < STOP_TIMEOUT_S + 5
    finally:
        if hung.poll() is None:
            hung.kill()
        hung.wait()


def node_pids(marker: str) -> list[int]:
    """Live processes (not zombies) whose command line holds marker."""
    pids = []
    for proc in Path('/proc').iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / 'cmdline').read_bytes().replace(b'\0', b' ').decode()
            state = (proc / 'stat').read_text().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state not in 'ZX':
            pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='parent-death signal: Linux')
def test_nodes_die_with_their_launcher(tmp_path):
    """Issue 18, edge 2: SIGTERM to `ros2 launch` (docker stop, systemd) left the detector
    running, re-parented to PID 1. Here the launcher gets SIGKILL, so it can pass nothing on:
    every node must be gone within 10 s all the same."""
    marker = f'cache_dir:={tmp_path}'
    launch = YoloTrt('launch', 'namespace:=orphans', marker, 'backend:=onnxruntime')
    try:
        with ros_context() as context:
            executor = SingleThreadedExecutor(context=context)
            node = make_node(context, 'launch_client', executor)
            spin_until(executor, lambda: node.count_subscribers('/orphans/image') > 0,
                       timeout=60, what='the detector in namespace orphans')
            executor.shutdown()
        assert node_pids(marker) != [launch.proc.pid]  # the detector is among them
        launch.proc.kill()
        launch.proc.wait()
        deadline = time.monotonic() + 10
        while node_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node_pids(marker) == [], 'nodes outlived their launcher by 10 s'
    finally:
        launch.finish(timeout=0)
        for pid in node_pids(marker):  # reap what a failure left
            os.kill(pid, signal.SIGKILL)


def test_yolo_trt_launch_help_lists_every_argument_with_its_default():
    """Issue 18, edge 6: `yolo-trt launch --help` listed no arguments."""
    out = subprocess.run([sys.executable, '-m', 'yolo_trt_ros.cli', 'launch', '--help'],
                         capture_output=True, text=True, timeout=30).stdout
    for name, (default, _) in launch_args.LAUNCH_ARGUMENTS.items():
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None, f'{name} missing from:\n{out}'
        assert line.endswith(f"(default: {default or 'empty'})"), line


# -- issue 21, item 4: workers spread over GPUs (devices:=all|0,1) -------------------------

@pytest.mark.parametrize('devices,workers,visible,expected', [
    ('all', 1, 2, [0]),  # as far as the workers reach
    ('all', 2, 2, [0, 1]),
    ('all', 3, 2, [0, 0, 1]),  # contiguous groups, sizes differing by one at most
    ('all', 8, 2, [0, 0, 0, 0, 1, 1, 1, 1]),
    ('all', 2, 0, [None, None]),  # no GPU: ONNX Runtime, as without the argument
    ('0', 2, 1, [0, 0]),  # two workers given device 0 explicitly
    ('1,0', 4, 2, [1, 1, 0, 0]),  # in the order given
    ('1', 1, 2, [1]),
])
def test_device_plan_spreads_the_workers_over_the_gpus(devices, workers, visible, expected):
    assert launch_args.device_plan(devices, workers, visible) == expected


@pytest.mark.parametrize('devices,workers,visible,why,expected', [
    ('0,1', 2, 1, '', 'launch argument devices: GPU 1 is not visible here (1 GPU: 0)'),
    ('3', 1, 2, '', 'launch argument devices: GPU 3 is not visible here (2 GPUs: 0, 1)'),
    ('0', 1, 0, 'no CUDA device (cudaErrorNoDevice)', 'launch argument devices: GPU 0 is '
     'not visible here (no GPU: no CUDA device (cudaErrorNoDevice))'),
    ('0,1', 1, 2, '', 'launch argument devices: 2 GPUs (0,1) for 1 detector process: each '
     'GPU needs a worker (workers:=2 or more; a worker takes one camera at least)'),
])
def test_device_plan_refuses_gpus_that_cannot_be_used(devices, workers, visible, why,
                                                      expected):
    with pytest.raises(ValueError) as exc:
        launch_args.device_plan(devices, workers, visible, why)
    assert str(exc.value) == expected


@pytest.mark.parametrize('bad', ['', 'any', '-1', '0,0', '0,,1', '1.5', 'gpu0'])
def test_devices_is_validated(bad):
    values = {name: default for name, (default, _) in launch_args.LAUNCH_ARGUMENTS.items()}
    with pytest.raises(ValueError, match=f"launch argument devices: '{re.escape(bad)}' is "
                                         f'not all or GPU indices'):
        launch_args.validate(dict(values, devices=bad))
    launch_args.validate(dict(values, devices='1, 0'))


def test_each_worker_is_put_on_its_gpu_by_the_environment():
    """CUDA_VISIBLE_DEVICES names the worker's one GPU: its device 0 is that GPU, so the
    engine cache key (core/build/lookup.py target_fields: device 0's name and compute
    capability) names the GPU the engine is built for and run on. Indices count the
    entries of the launch's own CUDA_VISIBLE_DEVICES where it has one."""
    assert launch_args.device_environment(None, '0,1') == {}
    assert launch_args.device_environment(1, None) == {'CUDA_VISIBLE_DEVICES': '1'}
    assert launch_args.device_environment(1, 'GPU-aa, GPU-bb') == {'CUDA_VISIBLE_DEVICES':
                                                                  'GPU-bb'}
    assert launch_args.device_environment(0, '3,2') == {'CUDA_VISIBLE_DEVICES': '3'}


def launch_values(**changes) -> dict[str, str]:
    values = {name: default for name, (default, _) in launch_args.LAUNCH_ARGUMENTS.items()}
    values.update(changes)
    launch_args.validate(values)
    return values


def test_launch_plan_builds_for_every_gpu_used_and_spreads_the_detectors(monkeypatch):
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    builders, detectors = launch_args.launch_plan(
        launch_values(image_topic='a,b,c,d', workers='4'), {'max_detections': 7},
        gpus=lambda: (2, ''))
    assert [(b.name, b.env) for b in builders] == [
        ('engine_builder_0', {'CUDA_VISIBLE_DEVICES': '0'}),
        ('engine_builder_1', {'CUDA_VISIBLE_DEVICES': '1'})]
    assert [(d.name, d.params['image_topics'], d.params['max_detections'],
             d.env['CUDA_VISIBLE_DEVICES']) for d in detectors] == [
        ('detector_0', 'a', 7, '0'), ('detector_1', 'b', 7, '0'),
        ('detector_2', 'c', 7, '1'), ('detector_3', 'd', 7, '1')]


def test_launch_plan_of_one_gpu_or_none(monkeypatch):
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)

    def no_probe():
        raise AssertionError('the GPUs were probed for a launch that does not need it')

    # The default (one worker, devices:=all) is what it was before: no probe, no change.
    builders, detectors = launch_args.launch_plan(launch_values(), {}, gpus=no_probe)
    assert [(b.name, b.env) for b in builders] == [('engine_builder', {})]
    assert [(d.name, d.params, d.env) for d in detectors] == [('detector', {}, {})]
    # Two workers given device 0 explicitly: one builder for it, both workers on it.
    builders, detectors = launch_args.launch_plan(
        launch_values(image_topic='a,b', workers='2', devices='0'), {}, gpus=lambda: (1, ''))
    assert [(b.name, b.env) for b in builders] == [('engine_builder',
                                                    {'CUDA_VISIBLE_DEVICES': '0'})]
    assert [d.env for d in detectors] == [{'CUDA_VISIBLE_DEVICES': '0'}] * 2
    # No GPU: workers as before, nothing set.
    builders, detectors = launch_args.launch_plan(
        launch_values(image_topic='a,b', workers='2'), {}, gpus=lambda: (0, 'no driver'))
    assert [b.env for b in builders] == [{}] and [d.env for d in detectors] == [{}, {}]


def test_yolo_trt_launch_refuses_a_missing_gpu_before_any_node_starts():
    """A GPU index that is not there: one line, exit 2, nothing started (99: missing on
    every machine; on one without a GPU the line says why there is none)."""
    rc, out = YoloTrt('launch', 'image_topic:=a,b', 'workers:=2', 'devices:=0,99').finish(60)
    assert rc == 2, out
    assert out.startswith('yolo-trt launch: launch argument devices: GPU 99 is not visible '
                          'here (') or \
        out.startswith('yolo-trt launch: launch argument devices: GPU 0 is not visible here '
                       '(no GPU: '), out
    assert len(out.strip().splitlines()) == 1 and 'engine_builder' not in out


def process_environment(marker: str) -> dict[int, dict[str, str]]:
    """The environment of each live process whose command line holds marker."""
    out = {}
    for pid in node_pids(marker):
        try:
            raw = Path(f'/proc/{pid}/environ').read_bytes()
        except OSError:
            continue
        out[pid] = dict(item.split('=', 1) for item in raw.decode(errors='replace').split('\0')
                        if '=' in item)
    return out


@pytest.mark.gpu
def test_two_workers_given_device_0_run_on_it(bus_jpg, tmp_path, monkeypatch):
    """One GPU: workers:=2 devices:=0 puts both detector processes on GPU 0 (their
    CUDA_VISIBLE_DEVICES), each on the GPU path (the stand-in engine of the benchmarks in
    place of TensorRT, which no machine here has), and both cameras are served."""
    from yolo_trt_ros.core.backends.trt_module import RUNTIME_MODULE_ENV
    from yolo_trt_ros.core.models.synthetic import constant_output_model, yolov8_output
    from yolo_trt_ros.testing import gpu_standin

    engine = gpu_standin.make_engine(tmp_path / 'standin' / 'standin.engine', max_batch=2)
    model = constant_output_model(tmp_path / 'null.onnx', yolov8_output(), (640, 640),
                                  batch='N')
    params = tmp_path / 'params.yaml'
    params.write_text(yaml.safe_dump({'/**/detector': {'ros__parameters': {
        'engine_path': str(engine), 'publish_annotated': False}}}))
    monkeypatch.setenv(RUNTIME_MODULE_ENV, gpu_standin.__name__)
    marker = f'cache_dir:={tmp_path}'
    launch = YoloTrt('launch', 'image_topic:=cam1/image_raw,cam2/image_raw', 'workers:=2',
                     'devices:=0', f'model:={model}', f'params_file:={params}', marker)
    try:
        with ros_context() as context:
            executor = SingleThreadedExecutor(context=context)
            node = make_node(context, 'devices_client', executor)

            def both_on_gpu_0():
                workers = {pid: env for pid, env in process_environment(marker).items()
                           if '__node:=detector_' in Path(f'/proc/{pid}/cmdline').read_bytes()
                           .replace(b'\0', b' ').decode()}
                assert [env.get('CUDA_VISIBLE_DEVICES') for env in workers.values()] == \
                    ['0', '0']

            serve_two_cameras(executor, node, bus_jpg, both_on_gpu_0, timeout=120)
            executor.shutdown()
        launch.proc.send_signal(signal.SIGINT)
        rc, out = launch.finish(timeout=30)
        assert rc == 0, out
        assert out.count('backend tensorrt on cuda:0') == 2, out
        assert out.count('CUDA_VISIBLE_DEVICES=0') == 2, out
    finally:
        launch.finish(timeout=0)


def test_workers_wait_for_a_lifecycle_manager_with_autostart_false(tmp_path):
    """Issue 18: workers follow the same states; with autostart:=false each waits,
    unconfigured, and a manager brings them up one by one."""
    from lifecycle_msgs.msg import Transition

    launch = YoloTrt('launch', 'namespace:=managed', 'workers:=2', 'autostart:=false',
                     'image_topic:=a/image,b/image', f'cache_dir:={tmp_path}',
                     'backend:=onnxruntime')
    try:
        with ros_context() as context:
            client = Client(context)
            for worker in ('detector_0', 'detector_1'):
                assert lifecycle_state(client, f'/managed/{worker}') == 'unconfigured'
            assert client.node.count_subscribers('/managed/b/image') == 0
            node = '/managed/detector_1'
            assert change_state(client, Transition.TRANSITION_CONFIGURE, node)
            assert change_state(client, Transition.TRANSITION_ACTIVATE, node)
            client.wait(lambda: client.node.count_subscribers('/managed/b/image') == 1,
                        'the activated worker subscribed to its camera')
            assert lifecycle_state(client, '/managed/detector_0') == 'unconfigured'
            assert client.node.count_subscribers('/managed/a/image') == 0
            client.executor.shutdown()
        launch.proc.send_signal(signal.SIGTERM)
        # Its own escalation takes at most 5 s a node; CI once saw no end in 30 s on a
        # loaded machine, what was still running not said (finish says it now).
        rc, out = launch.finish(timeout=60)
        assert rc == 0, out
    finally:
        launch.finish(timeout=0)
