"""Helpers for tests that run real rclpy nodes: a context per test, waits with deadlines,
the detector as a process, and the test's side of the graph."""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import rclpy
from lifecycle_msgs.msg import Transition
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from yolo_trt_ros.ros.image_source_node import to_message


@contextmanager
def ros_context() -> Iterator[Context]:
    """A fresh rclpy context (own init/shutdown), so tests never share graph state."""
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


def spin_until(executor: SingleThreadedExecutor, condition: Callable[[], bool],
               timeout: float = 20.0, what: str = 'condition',
               explain: Callable[[], str] | None = None) -> None:
    """Spin until condition() is true; fail with `what` after `timeout` seconds, and with
    explain() where given: what the nodes said, so a failure in CI tells which side stalled."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}'
                                 + (f'\n{explain()}' if explain else ''))
        executor.spin_once(timeout_sec=0.05)


@functools.cache
def message_info_names_publishers() -> bool:
    """Whether this rclpy hands a subscription callback the publisher's gid with each
    message. Kilted's does; Jazzy's MessageInfo has the publication sequence numbers but no
    publisher_gid; Humble's passes no MessageInfo at all. Asked of a real subscription."""
    from rclpy.subscription import Subscription
    from std_msgs.msg import String

    if not hasattr(Subscription, 'CallbackType'):  # Humble: the message alone
        return False
    infos: list[dict] = []
    with ros_context() as context:
        executor = SingleThreadedExecutor(context=context)
        node = make_node(context, 'message_info_probe', executor)
        qos = QoSProfile(depth=10)
        node.create_subscription(String, 'message_info_probe', lambda _, info: infos.append(info),
                                 qos, raw=True)
        pub = node.create_publisher(String, 'message_info_probe', qos)
        spin_until(executor, lambda: pub.get_subscription_count() > 0, what='the probe match')
        pub.publish(String(data='probe'))
        spin_until(executor, lambda: infos, what='the probe message')
        executor.shutdown()
    return bool(infos[0].get('publisher_gid'))


def detector_names_publishers() -> bool:
    """Whether the detector's frames come with their publisher's gid: taken by rcl itself
    (yolo_trt_ros/ros/rcl_take.py) on every distro where librcl loads by name, else as
    rclpy's message info has it."""
    from yolo_trt_ros.ros.rcl_take import available

    return available() or message_info_names_publishers()


def make_node(context: Context, name: str, executor: SingleThreadedExecutor) -> Node:
    node = Node(name, context=context)
    executor.add_node(node)
    return node


class LosingServer:
    """A node in this process whose services drop replies, as Fast DDS does when the server
    has not matched the client's response reader within its 100 ms wait (rmw_fastrtps#390,
    #467). Spun in a thread of its own; a service callback loses its reply by raising
    ReplyLost (rclpy then sends none). services: name -> (type, callback)."""

    def __init__(self, context: Context, name: str, services: dict[str, tuple]) -> None:
        self.executor = SingleThreadedExecutor(context=context)
        # Without rclpy's own parameter services: these may be the ones it serves.
        self.node = Node(name, context=context, start_parameter_services=False)
        self.executor.add_node(self.node)
        # Made in the order given: rclpy serves requests ready together in that order.
        for service, (srv_type, callback) in services.items():
            self.node.create_service(srv_type, service, callback)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except ReplyLost:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.executor.shutdown()


class ReplyLost(RuntimeError):
    """Raised by a LosingServer callback: this request gets no reply."""


class NodeProcess:
    """A node started as its own process (`python -m module --ros-args ...`), always
    reaped: stop() sends SIGINT, then kills after a deadline."""

    def __init__(self, module: str, params: dict[str, object] | None = None,
                 remaps: dict[str, str] | None = None, ros_args: list[str] | None = None,
                 env: dict[str, str] | None = None, command: list[str] | None = None):
        import subprocess
        import sys
        import tempfile

        from yolo_trt_ros.launcher import param_args
        # command: how to start it instead of `python -m module` (an installed executable)
        args = [*(command or [sys.executable, '-m', module]), '--ros-args',
                *param_args(params or {})]
        for src, dst in (remaps or {}).items():
            args += ['-r', f'{src}:={dst}']
        args += ros_args or []
        self.log_file = tempfile.NamedTemporaryFile('w+', suffix='.log', delete=False)
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     text=True, env=env)

    def output(self) -> str:
        with open(self.log_file.name) as f:
            return f.read()

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f'process exited ({self.proc.returncode}) before '
                                     f'printing {text!r}:\n{self.output()}')
            if time.monotonic() > deadline:
                raise AssertionError(f'no {text!r} within {timeout:.0f} s:\n{self.output()}')
            time.sleep(0.05)  # polling a log file: there is nothing to block on

    def rss_kib(self, children: bool = False) -> int:
        """Resident memory of the node; children: with its child processes (decoders)."""
        pids = [self.proc.pid]
        if children:
            for task in Path(f'/proc/{self.proc.pid}/task').iterdir():
                try:
                    pids += [int(p) for p in (task / 'children').read_text().split()]
                except OSError:  # a thread that has just ended
                    continue
        total = 0
        for pid in pids:
            try:
                status = Path(f'/proc/{pid}/status').read_text()
            except OSError:  # a child that has just ended (ESRCH if reaped while read)
                continue
            rss = next((line for line in status.splitlines() if line.startswith('VmRSS:')),
                       None)
            if rss is None:
                continue  # a child that has ended, not yet reaped: a zombie has no memory
            total += int(rss.split()[1])
        return total

    def stop(self, timeout: float = 10.0) -> int:
        import signal
        import subprocess
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()



DETECTOR = 'yolo_trt_ros.ros.detector_node'
PUB_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
RESEND_S = 5.0  # a request safe to repeat is sent again after this long without a reply


class Client:
    """The test's side of the graph: publishers, collected messages, deadline waits."""

    def __init__(self, context):
        self.executor = SingleThreadedExecutor(context=context)
        self.node = make_node(context, 'test_client', self.executor)
        self.received: dict[str, list] = {}
        self._services: dict[str, object] = {}

    def collect(self, msg_type, topic: str, qos=10) -> list:
        box = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, box.append, qos)
        return box

    def publisher(self, msg_type, topic: str):
        pub = self.node.create_publisher(msg_type, topic, PUB_QOS)
        spin_until(self.executor, lambda: pub.get_subscription_count() > 0,
                   what=f'the detector to subscribe to {topic}')
        return pub

    def answers_matched(self, *topics: str, timeout: float = 30.0) -> None:
        """Wait until both sides of this client's readers of `topics` are matched with the
        detector's writers: an answer published before its writer knows the test's reader
        is lost in DDS (CI once: answers 1 and 2 of a camera). This side: the graph names a
        publisher of each topic. The detector's side: a node matches another participant's
        readers in the order they were announced, so once its 1 Hz diagnostics reach a
        reader made now, every reader made before was matched."""
        from diagnostic_msgs.msg import DiagnosticArray

        for topic in topics:
            self.wait(lambda t=topic: self.node.count_publishers(t) > 0,
                      f'a publisher of {topic}', timeout)
        heard: list = []
        sub = self.node.create_subscription(DiagnosticArray, '/diagnostics', heard.append, 10)
        self.wait(lambda: heard, "the detector's diagnostics on a reader made last", timeout)
        self.node.destroy_subscription(sub)

    def wait(self, condition, what: str, timeout: float = 30.0,
             explain: Callable[[], str] | None = None) -> None:
        spin_until(self.executor, condition, timeout=timeout, what=what, explain=explain)

    def request(self, srv_type, name: str, request, timeout: float = 30.0):
        """Send a request on this test's one client of service `name` (made once, so only
        its first call waits for discovery, at most timeout s); the future of the reply."""
        cli = self._services.get(name)
        if cli is None:
            cli = self._services[name] = self.node.create_client(srv_type, name)
        self.wait(cli.service_is_ready, name, timeout)
        return cli, cli.call_async(request)

    def call(self, srv_type, name: str, request, what: str, timeout: float = 60.0):
        """The reply to a request that is safe to repeat, asked again every few seconds
        until one comes. A reply can be lost: Fast DDS drops a service's response when the
        server has not yet matched the client's response reader (it waits 100 ms for that),
        which a loaded 2-core CI machine exceeds; the caller then waited forever."""
        deadline = time.monotonic() + timeout
        while True:
            cli, future = self.request(srv_type, name, request,
                                       max(1.0, deadline - time.monotonic()))
            try:
                self.wait(future.done, what, timeout=min(RESEND_S, deadline - time.monotonic()))
                return future.result()
            except AssertionError:
                cli.remove_pending_request(future)
                if time.monotonic() >= deadline:
                    raise


@contextmanager
def running(wait_for: str = '-> ', **params):
    """The detector node as a process with params, and the test's client; wait_for: the
    line that says it is up (by default: its subscriptions are made)."""
    params.setdefault('backend', 'onnxruntime')
    # Reliable input QoS: a frame published once is delivered even while discovery is
    # still settling on a loaded machine (best effort would drop it; the overload test
    # keeps the sensor-data default on purpose).
    params.setdefault('qos_reliability', 'reliable')
    with NodeProcess(DETECTOR, params) as proc, ros_context() as context:
        proc.wait_for_output(wait_for)
        client = Client(context)
        try:
            yield proc, client
        finally:
            client.executor.shutdown()


def frame(path, encoding: str, stamp_sec: int, frame_id: str):
    msg = to_message(cv2.imread(str(path)), encoding)
    msg.header = Header(frame_id=frame_id)
    msg.header.stamp.sec = stamp_sec
    return msg


def set_parameter(client: Client, name: str, value: ParameterValue,
                  node: str = '/detector') -> tuple[bool, str]:
    """Set one parameter through the node's service: (successful, reason)."""
    # Setting a parameter to the same value twice is the same as once: safe to repeat.
    reply = client.call(SetParameters, f'{node}/set_parameters', SetParameters.Request(
        parameters=[ParameterMsg(name=name, value=value)]), 'the parameter change')
    result = reply.results[0]
    return result.successful, result.reason


def get_parameter(client: Client, name: str, node: str = '/detector') -> ParameterValue:
    """One parameter's value through the node's service, with its type as stored."""
    return client.call(GetParameters, f'{node}/get_parameters',
                       GetParameters.Request(names=[name]), 'the parameter value').values[0]


def double(value: float) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)


def diagnostics_values(diags: list, status: int = 0) -> dict[str, str]:
    """The last diagnostics' key-values of one status (a camera); {} before any came."""
    return {kv.key: kv.value for kv in diags[-1].status[status].values} if diags else {}


def diagnostics_value(diags: list, key: str, status: int = 0) -> str | None:
    return diagnostics_values(diags, status).get(key)


def change_state(client: Client, transition: int, node: str = '/detector') -> bool:
    """Ask a managed node for a lifecycle transition (lifecycle_msgs/Transition id).

    A transition cannot be asked twice, so a lost reply (see Client.call) is read from the
    state the node settles in instead: the transition's goal state means it succeeded."""
    from lifecycle_msgs.srv import ChangeState

    _, future = client.request(ChangeState, f'{node}/change_state',
                               ChangeState.Request(transition=Transition(id=transition)))
    deadline = time.monotonic() + 60
    while True:
        try:
            client.wait(future.done, f'transition {transition}', timeout=RESEND_S)
            return future.result().success
        except AssertionError:
            label = lifecycle_state(client, node)
            if future.done():
                return future.result().success
            if label in PRIMARY_STATES:  # settled, and no reply came: it was lost
                return label == GOAL_STATES[transition]
            if time.monotonic() >= deadline:
                raise


PRIMARY_STATES = ('unconfigured', 'inactive', 'active', 'finalized')
# each transition -> the primary state it leads to when it succeeds
GOAL_STATES = {Transition.TRANSITION_CONFIGURE: 'inactive',
               Transition.TRANSITION_CLEANUP: 'unconfigured',
               Transition.TRANSITION_ACTIVATE: 'active',
               Transition.TRANSITION_DEACTIVATE: 'inactive',
               Transition.TRANSITION_UNCONFIGURED_SHUTDOWN: 'finalized',
               Transition.TRANSITION_INACTIVE_SHUTDOWN: 'finalized',
               Transition.TRANSITION_ACTIVE_SHUTDOWN: 'finalized'}


def lifecycle_state(client: Client, node: str = '/detector') -> str:
    from lifecycle_msgs.srv import GetState

    return client.call(GetState, f'{node}/get_state', GetState.Request(),
                       'the lifecycle state').current_state.label
