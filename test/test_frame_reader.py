"""The frame reader (yolo_trt_ros/ros/frame_reader.py): image subscriptions served by a
thread of their own, never by the executor, with real rclpy in one process."""
from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from support.ros import make_node, ros_context, spin_until

from yolo_trt_ros.core.image.frame_buffers import FrameBuffers
from yolo_trt_ros.ros.cameras import WITH_MESSAGE_INFO, SubscriptionEventCallbacks
from yolo_trt_ros.ros.frame_reader import FrameReader
from yolo_trt_ros.ros.rcl_take import GID_BYTES, available

pytestmark = pytest.mark.ros
QOS = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)


def small(stamp: int) -> Image:
    msg = Image(height=2, width=2, encoding='mono8', step=2, data=bytes(4))
    msg.header.stamp.sec = stamp
    return msg


class Graph:
    """A node spun by an executor, a reader, and what reached whom; a topic of its own, so
    no test sees another's subscriptions while discovery forgets them."""

    topics = itertools.count()

    def __init__(self, context, buffers: FrameBuffers | None = None) -> None:
        self.executor = SingleThreadedExecutor(context=context)
        self.node = make_node(context, 'frame_reader_test', self.executor)
        self.failures: list[Exception] = []
        self.reader = FrameReader(context, self.failures.append, WITH_MESSAGE_INFO, buffers)
        self.by_executor: list = []
        self.frames: list[tuple[bytes, dict | None, str]] = []
        self.topic = f'image_{next(Graph.topics)}'
        self.pub = self.node.create_publisher(Image, self.topic, QOS)

    def subscribe(self, on_frame=None):
        sub = self.node.create_subscription(
            Image, self.topic, lambda *args: self.by_executor.append(args), QOS, raw=True,
            callback_group=self.reader.group)
        self.reader.add(sub, on_frame or (lambda data, info: self.frames.append(
            (data, info, threading.current_thread().name))))
        spin_until(self.executor, lambda: self.pub.get_subscription_count() == 1,
                   what='the subscription to match')
        return sub

    def close(self) -> None:
        self.reader.close()
        self.executor.shutdown()
        self.node.destroy_node()


def stamps(frames) -> list[int]:
    from rclpy.serialization import deserialize_message
    return [deserialize_message(bytes(data), Image).header.stamp.sec for data, *_ in frames]


def test_frames_reach_the_reader_in_order_and_never_the_executor():
    with ros_context() as context:
        graph = Graph(context)
        graph.subscribe()
        for n in range(10):
            graph.pub.publish(small(n))
        spin_until(graph.executor, lambda: len(graph.frames) == 10, what='10 frames')
        graph.close()
    assert stamps(graph.frames) == list(range(10))
    assert {thread for *_, thread in graph.frames} == {'frame-reader'}
    assert graph.by_executor == [] and graph.failures == []
    if WITH_MESSAGE_INFO:  # the publication sequence numbers the loss accounting reads
        numbers = [info['publication_sequence_number'] for _, info, _ in graph.frames]
        assert numbers == sorted(numbers) and len(set(numbers)) == 10


def test_a_subscription_removed_and_destroyed_while_waited_on_and_one_added_after():
    with ros_context() as context:
        graph = Graph(context)
        first = graph.subscribe()
        graph.pub.publish(small(1))
        spin_until(graph.executor, lambda: len(graph.frames) == 1, what='the first frame')
        graph.reader.remove(first)  # the thread is waiting on it now
        graph.node.destroy_subscription(first)
        spin_until(graph.executor, lambda: graph.pub.get_subscription_count() == 0,
                   what='the subscription to go')
        later: list = []
        graph.subscribe(lambda data, info: later.append((data, info)))
        graph.pub.publish(small(2))
        spin_until(graph.executor, lambda: later, what='a frame for the new subscription')
        graph.close()
    assert stamps(graph.frames) == [1] and stamps(later) == [2]
    assert graph.failures == []


def test_a_handler_that_raises_is_reported_and_the_next_frame_still_taken():
    def on_frame(data, info):
        if len(seen) == 0:
            seen.append(None)
            raise RuntimeError('a bug')
        seen.append(data)

    seen: list = []
    with ros_context() as context:
        graph = Graph(context)
        graph.subscribe(on_frame)
        graph.pub.publish(small(1))
        graph.pub.publish(small(2))
        spin_until(graph.executor, lambda: len(seen) == 2, what='the frame after the failure')
        graph.close()
    assert [str(e) for e in graph.failures] == ['a bug']
    assert stamps([(seen[1],)]) == [2]


def test_close_ends_the_thread():
    with ros_context() as context:
        graph = Graph(context)
        graph.subscribe()
        thread = graph.reader._thread
        graph.close()
        assert not thread.is_alive()


def test_a_subscription_destroyed_while_its_ready_event_is_taken_reports_no_failure(
        monkeypatch):
    """Review of the reader: rclpy refuses an event handler's handle once its destruction
    is requested, even while the reader holds it, so a subscription destroyed (the auto QoS
    switching after a camera restarted) between its event's wait and take made the take
    fail, logged as 'taking a frame failed ... please report this'. The destruction is put
    in that window here (an incompatible-QoS event: a reliable reader, a best-effort
    publisher)."""
    from rclpy.event_handler import EventHandler

    take_data, window = EventHandler.take_data, threading.Event()

    def destroyed_in_the_window(handler):
        if handler in sub.event_handlers and not window.is_set():  # the reader's take
            window.set()
            graph.reader.remove(sub)
            graph.node.destroy_subscription(sub)
        return take_data(handler)

    monkeypatch.setattr(EventHandler, 'take_data', destroyed_in_the_window)
    with ros_context() as context:
        graph = Graph(context)
        sub = graph.node.create_subscription(
            Image, graph.topic, lambda *_: None, QOS, raw=True,
            callback_group=graph.reader.group,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=lambda _: None))
        graph.reader.add(sub, lambda data, info: None)
        graph.node.create_publisher(
            Image, graph.topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        spin_until(graph.executor, window.is_set, what='the incompatible-QoS event')
        graph.reader.add(graph.node.create_subscription(  # the reader goes on after it
            Image, graph.topic, lambda *_: None, QoSProfile(depth=1), raw=True,
            callback_group=graph.reader.group), lambda data, info: graph.frames.append(data))
        spin_until(graph.executor, lambda: graph.pub.get_subscription_count() == 1,
                   what='the new subscription')
        graph.pub.publish(small(1))
        spin_until(graph.executor, lambda: graph.frames, what='a frame after it')
        graph.close()
    assert graph.failures == [], graph.failures


def sized(stamp: int, width: int, height: int) -> Image:
    data = np.random.default_rng(stamp).integers(0, 256, width * height * 3, np.uint8)
    msg = Image(height=height, width=width, encoding='bgr8', step=width * 3,
                data=data.tobytes())
    msg.header.stamp.sec = stamp
    return msg


@pytest.mark.skipif(not available(), reason='librcl cannot be loaded by name here')
def test_rcl_takes_each_frame_whole_into_the_buffers_with_its_publisher_on_every_distro():
    """rcl_take.py: the bytes rclpy would have handed over, in a buffer of the pool, a
    frame larger than the last one grown into a new buffer by rmw (through the taker's
    allocator), and the publisher's gid and sequence number on Humble and Jazzy too."""
    from rclpy.serialization import deserialize_message, serialize_message

    pool = FrameBuffers()
    sent = [sized(1, 4, 2), sized(2, 1920, 1080), sized(3, 640, 480), sized(4, 1920, 1080)]
    with ros_context() as context:
        graph = Graph(context, pool)
        graph.subscribe()
        for msg in sent:
            graph.pub.publish(msg)
        spin_until(graph.executor, lambda: len(graph.frames) == len(sent), what='4 frames')
        (publisher,) = graph.node.get_publishers_info_by_topic(graph.topic)
        graph.close()
    assert graph.failures == []
    for (data, info, thread), msg in zip(graph.frames, sent, strict=True):
        assert isinstance(data, np.ndarray) and thread == 'frame-reader'
        # the same message (CDR's padding bytes are the publisher's: not compared)
        assert len(data) == len(serialize_message(msg))
        assert deserialize_message(bytes(data), Image) == msg
        assert info['publisher_gid']['data'] == bytes(publisher.endpoint_gid)[:GID_BYTES]
    numbers = [info['publication_sequence_number'] for _, info, _ in graph.frames]
    assert numbers == list(range(numbers[0], numbers[0] + len(sent)))


@pytest.mark.skipif(not available(), reason='librcl cannot be loaded by name here')
def test_a_frame_let_go_of_frees_its_buffer_for_the_next():
    pool, seen = FrameBuffers(), []
    with ros_context() as context:
        graph = Graph(context, pool)
        graph.subscribe(lambda data, info: seen.append(int(data[-1])))  # keeps no view
        for n in range(20):
            graph.pub.publish(sized(n, 64, 48))
            spin_until(graph.executor, lambda n=n: len(seen) == n + 1, what=f'frame {n}')
        graph.close()
    assert seen == [int(sized(n, 64, 48).data[-1]) for n in range(20)]
    assert len(pool) <= 2, len(pool)  # one being filled, one the handler had just let go


@pytest.mark.skipif(not available(), reason='librcl cannot be loaded by name here')
def test_the_message_resized_by_rmw_stays_in_place_or_grows_from_the_pool_and_never_fails():
    """Review of rcl_take.py: rmw_cyclonedds resizes the message to its exact size on every
    take (smaller too), which took a second buffer and copied it each time; and a NULL from
    the allocator loses the frame (every rmw has taken the sample out of DDS by then). The
    allocator's callbacks called as rcutils_uint8_array_resize calls them."""
    from yolo_trt_ros.ros.rcl_take import SerializedTaker

    taker = SerializedTaker(FrameBuffers())
    taker._current = taker.buffers.get(1000)
    ptr = taker._current.ctypes.data
    assert taker._reallocate(ptr, 600, None) == ptr and len(taker.buffers) == 1
    taker._current[:4] = [1, 2, 3, 4]
    taker._msg.buffer_length = 4  # realloc keeps what the message holds
    assert taker._reallocate(ptr, 5000, None) != ptr
    assert taker._current.nbytes >= 5000 and list(taker._current[:4]) == [1, 2, 3, 4]

    def refusing(nbytes: int):
        raise MemoryError('cudaMallocHost: out of memory')

    starved = SerializedTaker(FrameBuffers(refusing))
    assert starved._allocate(100, None) == starved._current.ctypes.data != 0
    assert starved._current.nbytes == 100


@pytest.mark.skipif(not available(), reason='librcl cannot be loaded by name here')
def test_frames_are_taken_where_the_pool_refuses_memory():
    """Pinned memory refused (cudaMallocHost out of memory, a 4K camera after a 1080p
    warm-up): the buffer for the take was asked for outside the fallback the allocator's
    callbacks have, so the take raised before rcl took the sample; the subscription stayed
    ready and the reader spun on it, every later camera starved. Ordinary memory takes the
    frame now."""
    def refusing(nbytes: int):  # the pool's allocator, failing as pinned allocation can
        raise MemoryError('cudaMallocHost: out of memory')

    with ros_context() as context:
        graph = Graph(context, FrameBuffers(refusing))
        graph.subscribe()
        for n in range(3):
            graph.pub.publish(small(n))
            spin_until(graph.executor, lambda n=n: len(graph.frames) == n + 1,
                       what=f'frame {n}', explain=lambda: repr(graph.failures[:3]))
        graph.close()
    assert stamps(graph.frames) == [0, 1, 2] and graph.failures == []


class CountedWaits:
    """rclpy's WaitSet, its waits counted: how often the reader's thread woke."""

    waits = 0

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def WaitSet(self, *args):  # rclpy's name
        wait_set, counted = self._real.WaitSet(*args), self

        class Counted:
            def __getattr__(self, name):
                return getattr(wait_set, name)

            def wait(self, timeout):
                counted.waits += 1
                return wait_set.wait(timeout)
        return Counted()


def test_a_subscription_whose_take_fails_starves_no_other_and_is_taken_again_once_it_works(
        monkeypatch):
    """Review of the reader: a take that raised (rcl_take_serialized_message failing, an
    rmw error) ended the pass over the ready subscriptions, and the reader's next pass met
    the same subscription first, still ready: every camera after it starved, and the
    reader spun. Then, with a rest, a second review: the resting subscription's QoS events
    stayed in the wait, and a pending sample woke them at once (107463 waits in 2 s), so it
    still spun; the waits are counted here. The failure is injected at the take (the one
    call replaced: an rmw error cannot be made on demand); the subscriptions, the wait
    and the frames are real."""
    from yolo_trt_ros.ros import frame_reader

    counted = CountedWaits(frame_reader._rclpy)
    monkeypatch.setattr(frame_reader, '_rclpy', counted)
    failing = threading.Event()
    failing.set()
    with ros_context() as context:
        graph = Graph(context)
        broken: list = []
        first = graph.subscribe(lambda data, info: broken.append(data))
        sub = graph.node.create_subscription(  # a second camera on the same topic
            Image, graph.topic, lambda *_: None, QOS, raw=True, callback_group=graph.reader.group)
        graph.reader.add(sub, lambda data, info: graph.frames.append((data, info, 'second')))
        spin_until(graph.executor, lambda: graph.pub.get_subscription_count() == 2,
                   what='both subscriptions to match')
        take = graph.reader._take

        def take_failing_for_the_first(s):
            if s is first and failing.is_set():
                raise RuntimeError('rcl_take_serialized_message returned 1: an rmw error')
            return take(s)

        graph.reader._take = take_failing_for_the_first
        began, waits = time.monotonic(), counted.waits
        for n in range(5):
            graph.pub.publish(small(n))
        spin_until(graph.executor, lambda: len(graph.frames) == 5 and len(graph.failures) >= 8,
                   what="the second camera's 5 frames while the first one's take fails",
                   explain=lambda: f'{len(graph.failures)} failures, {len(graph.frames)} frames')
        # the failing camera rests between tries: a wait or three per rest, not a spin
        elapsed, waits = time.monotonic() - began, counted.waits - waits
        failures = len(graph.failures)
        failing.clear()
        spin_until(graph.executor, lambda: len(broken) == 5,
                   what="the first camera's frames once its take works again")
        graph.close()
    assert stamps(graph.frames) == list(range(5)) and stamps([(d,) for d in broken]) == [
        0, 1, 2, 3, 4]
    rests = elapsed / frame_reader.REST_S
    assert waits <= 5 * rests + 50, (waits, elapsed)
    assert failures <= 3 * rests + 3, (failures, elapsed)
    assert {str(e) for e in graph.failures} == {
        'rcl_take_serialized_message returned 1: an rmw error'}
