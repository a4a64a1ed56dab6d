"""Build (or find) the engine, then detect: `ros2 launch yolo_trt_ros detect.launch.py`.

engine_builder runs first; the detector starts only when it exited 0 (a failed build ends
the launch with the reason). Both read config/detector.yaml (or params_file); the launch
arguments below override it. Names and defaults come from yolo_trt_ros.launch_args, which
`yolo-trt launch` uses too.
"""
import os
import sys
from pathlib import Path

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from yolo_trt_ros.launch_args import (
    BUILDER_FROM_ARGS,
    DETECTOR_FROM_ARGS,
    LAUNCH_ARGUMENTS,
    PARAM_TYPES,
    ROS2_LAUNCH_OWN,
    check_names,
    default_params_file,
    fastdds_profile,
    node_section,
    validate,
    worker_plan,
)


def _overrides(param_to_arg: dict) -> dict:
    return {param: ParameterValue(LaunchConfiguration(arg), value_type=PARAM_TYPES[param])
            for param, arg in param_to_arg.items()}


class LaunchError(RuntimeError):
    """Raised from the launch: `ros2 launch` reports it and exits non-zero."""


def _fail(message: str):
    def raise_it(_context):
        raise LaunchError(message)
    return OpaqueFunction(function=raise_it)


def _given(context) -> list[str]:
    """The NAME:=VALUE names of the `ros2 launch` command line, when it was asked to run this
    file. Included from another launch file, the command line is that file's (and its own
    arguments reach here too), so there is nothing to check."""
    this = Path(context.locals.current_launch_file_path).name
    if this not in {Path(arg).name for arg in sys.argv}:
        return []
    return [item.partition(':=')[0] for item in context.argv if ':=' in item]


def _nodes(context):
    # Every argument checked before any node starts (same rules as `yolo-trt launch`):
    # `ros2 launch` would pass a misspelt one on and change nothing.
    check_names(_given(context), also=ROS2_LAUNCH_OWN)
    validate({name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS})
    params_file = LaunchConfiguration('params_file').perform(context) or str(default_params_file())
    namespace = LaunchConfiguration('namespace')
    builder = Node(
        package='yolo_trt_ros', executable='engine_builder', name='engine_builder',
        namespace=namespace, output='screen',
        parameters=[params_file, _overrides(BUILDER_FROM_ARGS)])
    # workers:=N: N detector processes split the cameras (same topics as one would use),
    # each with its own CUDA context and stream on the one GPU, all on the one engine.
    own = node_section(params_file, namespace.perform(context), skip=DETECTOR_FROM_ARGS)
    plan = worker_plan(LaunchConfiguration('image_topic').perform(context),
                       LaunchConfiguration('workers').perform(context),
                       names=str(own.get('camera_names', '')),
                       depth=LaunchConfiguration('depth_topic').perform(context),
                       info=LaunchConfiguration('camera_info_topic').perform(context))
    detectors = [Node(
        package='yolo_trt_ros', executable='detector', name=worker['name'],
        namespace=namespace, output='screen',
        parameters=[params_file, *([own] if len(plan) > 1 else []),
                    _overrides(DETECTOR_FROM_ARGS),
                    {k: v for k, v in worker.items() if k != 'name'}])
        for worker in plan]

    def after_builder(event, _context):
        if event.returncode == 0:
            return detectors
        return [LogInfo(msg=f'engine_builder failed (exit {event.returncode}); '
                            f'not starting the detector'),
                _fail(f'engine_builder failed (exit {event.returncode})')]

    def after_detector(event, _context):
        # A signal-driven stop exits 0 (or -2/-15 when killed by launch itself); any other
        # code means the detector failed, and the launch must say so in its exit status.
        if event.returncode not in (0, -2, -15):
            return [_fail(f'detector exited with {event.returncode}')]
        return [EmitEvent(event=Shutdown(reason='detector stopped'))]

    return [builder,
            RegisterEventHandler(OnProcessExit(target_action=builder, on_exit=after_builder)),
            *(RegisterEventHandler(OnProcessExit(target_action=detector, on_exit=after_detector))
              for detector in detectors)]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in LAUNCH_ARGUMENTS.items()]
    actions = [*arguments]
    if 'FASTDDS_DEFAULT_PROFILES_FILE' not in os.environ:  # a profile of your own wins
        # Whole camera frames through shared memory (see config/fastdds_large_frames.xml).
        actions.append(SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE',
                                              str(fastdds_profile())))
    actions.append(OpaqueFunction(function=_nodes))
    return LaunchDescription(actions)
