"""Camera frames taken off the executor: a thread of their own waits on the image
subscriptions and hands each frame on the moment it arrives.

Why: after every callback, rclpy's executor rebuilds its wait set in Python before it
blocks again. The detector's node has about 30 entities (lifecycle and parameter services,
timers, QoS event handlers), so that took ~0.25 ms on dev with the GIL held, and the worker
that should take the frame waited for it. This thread's wait set holds only the image
subscriptions, and it does the least work between a frame and its next wait: the node's
wait for the worker fell from 0.35-0.45 to 0.13-0.18 ms p50 in the ROS round trip on dev
(bench/results/frame_reader_ab_dev.json, the code before and after alternating).

The subscriptions are made in `group`, which rclpy's SingleThreaded and MultiThreaded
executors leave alone (they ask the group); their QoS event handlers (message_lost) are
served here too, through the Waitable protocol, as an executor would. rclpy's
experimental EventsExecutor does not ask callback groups and would take frames too: give
each subscription the same handler as its callback, so a frame reaches the intake
whichever side takes it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack

from rclpy.callback_groups import CallbackGroup
from rclpy.context import Context
from rclpy.exceptions import InvalidHandle
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.subscription import Subscription

from yolo_trt_ros.core.image.frame_buffers import FrameBuffers
from yolo_trt_ros.ros.rcl_take import SerializedTaker, available

# (serialized message: bytes, or a uint8 array in a buffer of `buffers`; MessageInfo, or
# None where there is none: rclpy's take on Humble)
OnFrame = Callable[[object, 'dict | None'], None]
REST_S = 0.1  # how long a subscription whose take keeps failing is left out of the wait
FAILURES_BEFORE_REST = 3  # takes failed in a row; fewer are tried again at once
WAIT_NS = 1_000_000_000  # at most 1 s a wait, so a context shut down under it is noticed


class NotForExecutors(CallbackGroup):
    """The group of entities a FrameReader serves: every executor leaves them alone."""

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        pass


class FrameReader:
    """add(subscription, on_frame) for subscriptions made in `group` (raw=True);
    remove() before destroying one; close() before the node goes. on_failure(exc) is told
    of an exception in a handler (a bug: the thread goes on with the next frame).

    buffers: frames are taken into these by rcl itself (rcl_take.py), each with its
    message info on every distro; without them (or where librcl cannot be loaded) rclpy
    takes them as bytes, with its message info where with_message_info."""

    def __init__(self, context: Context, on_failure: Callable[[Exception], None],
                 with_message_info: bool, buffers: FrameBuffers | None = None) -> None:
        self.group = NotForExecutors()
        self._context, self._on_failure = context, on_failure
        self._with_info = with_message_info
        self._taker = SerializedTaker(buffers) if buffers is not None and available() else None
        self._handlers: dict[Subscription, OnFrame] = {}
        # A take that fails (an rmw error) is tried again at once; FAILURES_BEFORE_REST in a
        # row rest its subscription (and its events) out of the wait for REST_S: its sample
        # stays in the middleware, so the wait would return at once and spin. Resting loses
        # that camera's frames meanwhile, so a passing failure must not cause it.
        self._failed: dict[Subscription, int] = {}  # failures in a row
        self._resting: dict[Subscription, float] = {}
        self._lock = threading.Lock()
        self._changed = True
        self._closed = False
        self._wake = GuardCondition(None, None, context=context)  # in no node: ours alone
        self._thread = threading.Thread(target=self._run, name='frame-reader', daemon=True)
        self._thread.start()

    def add(self, subscription: Subscription, on_frame: OnFrame) -> None:
        with self._lock:
            self._handlers[subscription] = on_frame
            self._changed = True
        self._wake.trigger()

    def remove(self, subscription: Subscription) -> None:
        """After this returns the subscription may be destroyed: its handle is freed once
        the thread's current wait lets go of it (rclpy defers the destruction till then).
        Frames it already holds may still be handed on: only close() (which joins the
        thread) guarantees no more calls."""
        with self._lock:
            self._handlers.pop(subscription, None)
            self._changed = True
        self._wake.trigger()

    def close(self) -> None:
        with self._lock:
            self._closed = self._changed = True
        self._wake.trigger()
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._wake.destroy()

    @property
    def taking(self) -> str:
        """How frames are taken, for the log."""
        if self._taker is None:
            return 'frames taken by rclpy (bytes)'
        return f'frames taken by rcl into {self._taker.buffers.kind} buffers'

    def _context_ok(self) -> bool:
        try:
            return self._context.ok()
        except InvalidHandle:  # the context was destroyed under the thread
            return False

    def _run(self) -> None:
        while self._context_ok():
            with self._lock:
                if self._closed:
                    return
                handlers, self._changed = dict(self._handlers), False
            try:
                self._serve(handlers)
            except Exception as exc:  # a bug: the thread goes on
                if self._closed or not self._context_ok():
                    return
                self._on_failure(exc)

    def _serve(self, handlers: dict[Subscription, OnFrame]) -> None:
        """Wait on these subscriptions (and their events) until the set changes. Their
        handles stay held meanwhile: a destroy is carried out once this returns."""
        with ExitStack() as held:
            subs, events = [], []  # (subscription, handler), (subscription, event handler)
            for sub in handlers:
                try:
                    held.enter_context(sub.handle)
                except InvalidHandle:  # destroyed since it was added: removed next time
                    continue
                subs.append((sub, handlers[sub]))
                for event in sub.event_handlers:
                    try:
                        held.enter_context(event)
                        events.append((sub, event))
                    except InvalidHandle:
                        continue
            held.enter_context(self._wake.handle)
            wait_set = _rclpy.WaitSet(len(subs), 1, 0, 0, 0,
                                      sum(e.get_num_entities().num_events for _, e in events),
                                      self._context.handle)
            every_event = [event for _, event in events]
            self._failed = {s: n for s, n in self._failed.items() if s in handlers}
            resting = self._resting = {s: t for s, t in self._resting.items() if s in handlers}
            # The least work between a frame and the next wait: the worker that takes the
            # frame needs the GIL this thread holds until it blocks again.
            while not self._changed and self._context_ok():
                wait_set.clear_entities()
                timeout, waited = WAIT_NS, every_event
                if resting:  # left out with its events (a pending sample wakes those too)
                    now = time.monotonic()
                    for sub in [s for s, t in resting.items() if t <= now]:
                        del resting[sub]
                    timeout = min([timeout, *(int((t - now) * 1e9) + 1
                                              for t in resting.values())])
                    waited = [event for sub, event in events if sub not in resting]
                for sub, _ in subs:
                    if sub not in resting:
                        wait_set.add_subscription(sub.handle)
                try:
                    for event in waited:
                        event.add_to_wait_set(wait_set)
                except InvalidHandle:  # its subscription is being destroyed: rebuild
                    return
                wait_set.add_guard_condition(self._wake.handle)
                # Until a frame, an event, add/remove/close or a rest's end.
                wait_set.wait(timeout)
                ready = wait_set.get_ready_entities('subscription')
                for sub, on_frame in subs:
                    if sub.handle.pointer in ready and sub not in resting:
                        if not self._take_guarded(sub, on_frame):
                            return
                if self._changed:  # an event of a subscription being destroyed is refused
                    return
                try:  # only the events waited on: is_ready reads this wait's index
                    for event in waited:
                        if event.is_ready(wait_set):
                            _run_to_end(event.execute(event.take_data()))
                except InvalidHandle:  # destroyed since the check above: rebuild
                    return

    def _take_guarded(self, sub: Subscription, on_frame: OnFrame) -> bool:
        """Take sub's frames; a failure is this camera's alone. False: the reader closes."""
        try:
            self._take_all(sub, on_frame)
        except Exception as exc:
            if self._closed or not self._context_ok():
                return False
            self._on_failure(exc)
            self._failed[sub] = self._failed.get(sub, 0) + 1
            if self._failed[sub] >= FAILURES_BEFORE_REST:
                self._resting[sub] = time.monotonic() + REST_S
            return True
        if self._failed:
            self._failed.pop(sub, None)
        return True

    def _take(self, sub: Subscription) -> tuple[object, dict | None] | None:
        if self._taker is not None:
            return self._taker.take(sub)
        taken = sub.handle.take_message(sub.msg_type, sub.raw)
        return None if taken is None else (taken[0], taken[1] if self._with_info else None)

    def _take_all(self, sub: Subscription, on_frame: OnFrame) -> None:
        """Every frame waiting (a depth above 1 keeps several), oldest first."""
        while (taken := self._take(sub)) is not None:
            try:
                on_frame(*taken)
            except Exception as exc:  # a bug in the handler: the next frame is taken
                self._on_failure(exc)
            del taken  # its buffer is free again once the handler let go of it


def _run_to_end(coroutine) -> None:
    """An event handler's execute(): a coroutine that awaits nothing (it calls back)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError('a QoS event handler awaited: it cannot be served off the executor')
