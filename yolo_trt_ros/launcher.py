"""`yolo-trt launch`: detect.launch.py's two nodes as processes, for machines without
`ros2 launch` (the pip route). Same argument names and defaults (launch_args.py), same
nodes (launch_args.launch_plan), same order: the detector starts only after
engine_builder exited 0 (with several GPUs, every GPU's builder). Ctrl-C or SIGTERM stops
every child within a few seconds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable

from yolo_trt_ros.core.dds import unread_profile_note, with_profile
from yolo_trt_ros.launch_args import (
    BUILDER_FROM_ARGS,
    DETECTOR_FROM_ARGS,
    LAUNCH_ARGUMENTS,
    Process,
    check_names,
    default_params_file,
    fastdds_profile,
    launch_plan,
    node_section,
    validate,
    worker_note,
)

STOP_TIMEOUT_S = 5.0


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """['model:=x.onnx', ...] -> the full argument set with defaults; ValueError on an
    unknown name or a malformed item."""
    values = {name: default for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    for item in items:
        name, sep, value = item.partition(':=')
        if not sep:
            raise ValueError(f"'{item}': expected NAME:=VALUE")
        check_names([name])
        values[name] = value
    return values


def param_args(params: dict[str, object]) -> list[str]:
    """-p name:=value pairs for --ros-args (an empty string stays an empty string)."""
    out = []
    for name, value in params.items():
        text = ('true' if value else 'false') if isinstance(value, bool) else str(value)
        out += ['-p', f"{name}:={text if text else repr('')}"]
    return out


def node_command(module: str, args: dict[str, str], param_to_arg: dict[str, str],
                 name: str | None = None, extra: dict[str, object] | None = None) -> list[str]:
    """The node's command line; name renames it (a worker), extra sets more parameters."""
    command = [sys.executable, '-m', module, '--ros-args',
               '--params-file', args['params_file'] or str(default_params_file())]
    if args['namespace']:
        command += ['-r', f"__ns:=/{args['namespace'].strip('/')}"]
    if name:
        command += ['-r', f'__node:={name}']
    return command + param_args({**{p: args[a] for p, a in param_to_arg.items()},
                                 **(extra or {})})


class Launcher:
    """Starts builder then detector; stop() (or a signal) ends them."""

    def __init__(self, args: dict[str, str], log=print) -> None:
        self.args, self.log = args, log
        self.children: list[subprocess.Popen] = []
        self.stopping = threading.Event()
        self.env = with_profile(os.environ, str(fastdds_profile(args['dds_profile'])))
        if note := unread_profile_note(os.environ):
            log(f'yolo-trt launch: {note}')

    def _start(self, module: str, param_to_arg: dict[str, str], process: Process,
               default_name: str) -> subprocess.Popen:
        name = None if process.name == default_name else process.name
        proc = subprocess.Popen(node_command(module, self.args, param_to_arg, name,
                                             process.params),
                                env={**self.env, **process.env})
        self.children.append(proc)
        return proc

    def plan(self) -> tuple[list[Process], list[Process]]:
        """The builders and detectors to start (launch_args.launch_plan); ValueError, one
        line, for devices that cannot be used: before any node starts."""
        # Keys a launch argument sets stay out of `own`: the argument wins, as with one.
        own = node_section(self.args['params_file'] or default_params_file(),
                           self.args['namespace'], skip=DETECTOR_FROM_ARGS)
        return launch_plan(self.args, own)

    def start(self, plan: tuple[list[Process], list[Process]] | None = None) -> int:
        """Run the builder(s) to their end (one per GPU used, in parallel), then start the
        detector(s). 0 when they run."""
        builders, detectors = plan or self.plan()
        note = worker_note(self.args['image_topic'], self.args['workers'])
        if note:
            self.log(f'yolo-trt launch: {note}')
        started = [(b.name, self._start('yolo_trt_ros.ros.builder_node', BUILDER_FROM_ARGS,
                                        b, 'engine_builder')) for b in builders]
        failed = [(name, rc) for name, rc in ((n, p.wait()) for n, p in started) if rc != 0]
        if self.stopping.is_set():
            return 130
        if failed:
            name, rc = failed[0]
            self.log(f'yolo-trt launch: {name} failed (exit {rc}); not starting the '
                     f'detector')
            return rc
        self.detectors = {
            d.name: self._start('yolo_trt_ros.ros.detector_node', DETECTOR_FROM_ARGS, d,
                                'detector')
            for d in detectors}
        if self.stopping.is_set():  # a signal while they were being started
            self.interrupt()
        return 0

    def wait(self) -> tuple[str, int]:
        """Until a detector exits (its node name and status), or a signal asks to stop
        ('', 0): stop() then ends the rest, escalating to SIGKILL, so a hung child cannot
        hang the launch."""
        while not self.stopping.is_set():
            for name, proc in self.detectors.items():
                if proc.poll() is not None:
                    return name, proc.returncode
            self.stopping.wait(0.2)
        return '', 0

    def interrupt(self) -> None:
        """SIGINT to every running child. Safe in a signal handler: it never waits (the
        interrupted main thread may hold a child's wait lock)."""
        self.stopping.set()
        for proc in self.children:
            if proc.returncode is None:
                try:
                    proc.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        """interrupt(), then SIGKILL to any child still running after the timeout."""
        self.interrupt()
        for proc in self.children:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(items: list[str]) -> int:
    try:
        args = parse_assignments(items)
        validate(args)
        launcher = Launcher(args, log=lambda m: print(m, file=sys.stderr))
        plan = launcher.plan()
    except ValueError as exc:
        print(f'yolo-trt launch: {exc}', file=sys.stderr)
        return 2

    def on_signal(signum, _frame) -> None:
        launcher.interrupt()  # the main thread's wait returns; `finally` reaps

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = launcher.start(plan)
        if rc != 0:
            return rc
        name, rc = launcher.wait()
        if rc != 0 and not launcher.stopping.is_set():
            how = f'was killed by {signal.Signals(-rc).name}' if rc < 0 else f'exited with {rc}'
            print(f'yolo-trt launch: {name} {how}; stopping the other nodes', file=sys.stderr)
            return 128 - rc if rc < 0 else rc
        return 0
    finally:
        launcher.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
