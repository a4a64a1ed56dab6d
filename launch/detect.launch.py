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
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from yolo_trt_ros.core.dds import profile_env, unread_profile_note
from yolo_trt_ros.core.stopping import stopped_by_signal
from yolo_trt_ros.launch_args import (
    BUILDER_FROM_ARGS,
    DETECTOR_FROM_ARGS,
    LAUNCH_ARGUMENTS,
    PARAM_TYPES,
    ROS2_LAUNCH_OWN,
    check_names,
    default_params_file,
    fastdds_profile,
    launch_plan,
    node_section,
    validate,
    worker_note,
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
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    validate(values)
    params_file = LaunchConfiguration('params_file').perform(context) or str(default_params_file())
    namespace = LaunchConfiguration('namespace')
    # workers:=N: N detector processes split the cameras (same topics as one would use),
    # each with its own CUDA context and stream, on the GPUs of devices:= (one builder per
    # GPU used, each building for its GPU); the plan is checked before any node starts.
    own = node_section(params_file, namespace.perform(context), skip=DETECTOR_FROM_ARGS)
    builders, workers = launch_plan(values, own)
    # dds_profile: the Fast DDS profile of every node here (config/fastdds_*.xml say what
    # each is for), in the variable this ROS's Fast DDS reads; a profile of your own wins.
    # Given to these nodes only: set for the whole launch, a second include of this file
    # (another namespace, another dds_profile) took the first one's for the user's own.
    dds = profile_env(os.environ, str(fastdds_profile(values['dds_profile'])))
    builder_nodes = [Node(
        package='yolo_trt_ros', executable='engine_builder', name=builder.name,
        namespace=namespace, output='screen', additional_env={**builder.env, **dds},
        parameters=[params_file, _overrides(BUILDER_FROM_ARGS)])
        for builder in builders]
    detectors = [Node(
        package='yolo_trt_ros', executable='detector', name=worker.name,
        namespace=namespace, output='screen', additional_env={**worker.env, **dds},
        parameters=[params_file, _overrides(DETECTOR_FROM_ARGS), worker.params])
        for worker in workers]
    built: set[str] = set()

    def after_builder(name: str):
        def on_exit(event, context):  # the detectors start when every builder exited 0
            if event.returncode != 0 and (context.is_shutdown or
                                          stopped_by_signal(event.returncode)):
                # Ctrl-C (or SIGTERM) during the build: a stop, not a failed build
                return [LogInfo(msg=f'{name} stopped before the engine was built (exit '
                                    f'{event.returncode}); not starting the detector'),
                        EmitEvent(event=Shutdown(reason=f'{name} stopped'))]
            if event.returncode != 0:
                return [LogInfo(msg=f'{name} failed (exit {event.returncode}); not starting '
                                    f'the detector'),
                        _fail(f'{name} failed (exit {event.returncode})')]
            built.add(name)
            return detectors if len(built) == len(builder_nodes) else []
        return on_exit

    def after_detector(event, _context):
        # A signal-driven stop exits 0 (or 130/143, or -2/-15 where the signal ended it);
        # any other code means the detector failed, and the launch must say so in its exit
        # status.
        if event.returncode != 0 and not stopped_by_signal(event.returncode):
            return [_fail(f'detector exited with {event.returncode}')]
        return [EmitEvent(event=Shutdown(reason='detector stopped'))]

    notes = [note for note in (unread_profile_note(os.environ),
                               worker_note(values['image_topic'], values['workers'])) if note]
    return [*(LogInfo(msg=note) for note in notes), *builder_nodes,
            *(RegisterEventHandler(OnProcessExit(target_action=node,
                                                 on_exit=after_builder(builder.name)))
              for node, builder in zip(builder_nodes, builders, strict=True)),
            *(RegisterEventHandler(OnProcessExit(target_action=detector, on_exit=after_detector))
              for detector in detectors)]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, description) in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
