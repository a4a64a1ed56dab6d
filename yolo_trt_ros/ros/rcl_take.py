"""Take a subscription's serialized message straight into a buffer of ours, through rcl's C
API (ctypes): rcl_take_serialized_message with a preallocated rcl_serialized_message_t.

rclpy's raw take copies each frame into a new bytes object with the GIL held (1.0-1.5 ms
for a 1080p bgr8 frame on dev); here rmw copies it into a reusable buffer from
core/image/frame_buffers.py (0.5-0.6 ms there) while the GIL is released, and that buffer
is pinned where the GPU preprocesses, so the upload is a DMA from where the frame landed.
The message info comes from the same call on every distro: the publisher's gid and the
publication sequence number, which rclpy hands over only from Kilted on (Jazzy's has no
gid, Humble's no info at all).

Layouts (rcutils/rmw headers, identical from Humble to Kilted): rcutils_uint8_array_t is
{uint8_t *buffer; size_t length; size_t capacity; rcutils_allocator_t allocator} with the
allocator as five pointers; rmw_message_info_t begins with two int64 timestamps and two
uint64 sequence numbers, then rmw_gid_t {const char *implementation; uint8_t data[16 or
24]}. Fast DDS puts the writer's GUID in the gid's first 16 bytes, as in the graph's
endpoint gids; rmw_cyclonedds puts an instance handle there and gives no sequence numbers
(None here: nothing is counted from them).
"""
from __future__ import annotations

import ctypes
import os
from functools import cache

import numpy as np

from yolo_trt_ros.core.image.frame_buffers import FrameBuffers, ordinary

RCL_RET_OK, RCL_RET_SUBSCRIPTION_TAKE_FAILED = 0, 401
SEQUENCE_UNSUPPORTED = 2**64 - 1  # RMW_MESSAGE_INFO_SEQUENCE_NUMBER_UNSUPPORTED
GID_BYTES = 16
INFO_BYTES = 256  # larger than rmw_message_info_t on every distro (64-72 bytes)

_ALLOCATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_DEALLOCATE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_REALLOCATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                               ctypes.c_void_p)
_ZERO_ALLOCATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                                  ctypes.c_void_p)


class _Allocator(ctypes.Structure):
    _fields_ = [('allocate', _ALLOCATE), ('deallocate', _DEALLOCATE),
                ('reallocate', _REALLOCATE), ('zero_allocate', _ZERO_ALLOCATE),
                ('state', ctypes.c_void_p)]


class _Serialized(ctypes.Structure):
    _fields_ = [('buffer', ctypes.c_void_p), ('buffer_length', ctypes.c_size_t),
                ('buffer_capacity', ctypes.c_size_t), ('allocator', _Allocator)]


class _ErrorString(ctypes.Structure):
    _fields_ = [('text', ctypes.c_char * 1024)]  # rcutils_error_string_t


class _Info(ctypes.Structure):
    _fields_ = [('source_timestamp', ctypes.c_int64), ('received_timestamp', ctypes.c_int64),
                ('publication_sequence_number', ctypes.c_uint64),
                ('reception_sequence_number', ctypes.c_uint64),
                ('implementation', ctypes.c_char_p), ('gid', ctypes.c_uint8 * GID_BYTES),
                ('rest', ctypes.c_uint8 * (INFO_BYTES - 56))]


def _loaded(name: str) -> str:
    """The path of the library of that file name this process has loaded (rclpy's), else
    the name itself, for the dynamic loader to find."""
    try:
        with open('/proc/self/maps') as maps:
            for line in maps:
                path = line.rstrip('\n').rpartition(' ')[2]
                if os.path.basename(path) == name:
                    return path
    except OSError:
        pass
    return name


@cache
def _libraries() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    """librcl and librcutils, the very ones rclpy loaded; None where they cannot be found
    (an rclpy that links them statically, or under other names)."""
    try:
        rcl, rcutils = ctypes.CDLL(_loaded('librcl.so')), ctypes.CDLL(_loaded('librcutils.so'))
        take = rcl.rcl_take_serialized_message
        get_error, reset_error = rcutils.rcutils_get_error_string, rcutils.rcutils_reset_error
    except (OSError, AttributeError):
        return None
    take.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Serialized), ctypes.POINTER(_Info),
                     ctypes.c_void_p]
    take.restype = ctypes.c_int
    get_error.argtypes, get_error.restype = [], _ErrorString
    reset_error.argtypes, reset_error.restype = [], None
    return rcl, rcutils


TAKE_ENV = 'YOLO_TRT_ROS_TAKE'  # 'rclpy': take frames as rclpy does (A/B runs, a way out)


def available() -> bool:
    """Whether frames can be taken this way here (and are to be)."""
    if os.environ.get(TAKE_ENV, '').lower() == 'rclpy':
        return False
    import rclpy  # noqa: F401  (loads librcl, which _libraries() then finds)
    return _libraries() is not None


class TakeError(RuntimeError):
    """rcl refused a take (the frame is lost): rcl's error text."""


class SerializedTaker:
    """take(subscription) -> (the serialized message, its info as rclpy's dict) or None
    when none waits. One taker per thread: rcl's take is not thread-safe per subscription,
    and the buffer being filled belongs to this taker until the call returns.

    The message lands in a buffer from `buffers` sized by the subscription's previous
    message; a larger one is grown into a new buffer by rmw, through this taker's
    allocator (the first frame of each subscription, a camera switching resolution)."""

    def __init__(self, buffers: FrameBuffers) -> None:
        libs = _libraries()
        if libs is None:
            raise TakeError('librcl cannot be loaded by name')
        self._take = libs[0].rcl_take_serialized_message
        self._errors = libs[1]
        self.buffers = buffers
        self._expect: dict[int, int] = {}  # per subscription: the size of its last message
        self._current: np.ndarray | None = None  # the buffer the message is being taken into
        self._callbacks = (_ALLOCATE(self._allocate), _DEALLOCATE(lambda ptr, state: None),
                           _REALLOCATE(self._reallocate), _ZERO_ALLOCATE(self._zero_allocate))
        self._msg = _Serialized(allocator=_Allocator(*self._callbacks, None))
        self._info = _Info()

    # rmw sizes the message through these (rcutils_uint8_array_resize) once the sample is
    # out of DDS: Fast DDS and Zenoh when it is larger than the buffer given, Cyclone on
    # every take (to the exact size, smaller too). They must not fail (the sample is gone
    # by then: a NULL loses the frame) and must stay short (rmw_zenoh holds a lock).
    def _new(self, size: int) -> int:
        self._current = self._block(size, replace=False)
        return self._current.ctypes.data

    def _block(self, size: int, replace: bool) -> np.ndarray:
        try:
            return self.buffers.get(size, replace=replace)
        except Exception:  # never fail here (the pool has its own fallback): keep the frame
            return ordinary(size)[0]

    def _allocate(self, size: int, state) -> int:
        return self._new(size)

    def _reallocate(self, ptr, size: int, state) -> int:
        old = self._current
        if old is not None and ptr == old.ctypes.data and size <= old.nbytes:
            return ptr  # fits: shrinking or growing within the buffer is in place
        kept = min(self._msg.buffer_length, size)  # what realloc must keep (0 in a take)
        new = self._new(size)
        if old is not None and ptr == old.ctypes.data and kept:
            self._current[:kept] = old[:kept]
        return new

    def _zero_allocate(self, count: int, size: int, state) -> int:
        new = self._new(count * size)
        self._current[:count * size] = 0
        return new

    def take(self, subscription) -> tuple[np.ndarray, dict] | None:
        """subscription: an rclpy Subscription whose handle the caller holds."""
        handle = subscription.handle.pointer
        self._current = self._block(self._expect.get(handle, 1 << 16), replace=True)
        msg = self._msg
        msg.buffer, msg.buffer_length = self._current.ctypes.data, 0
        msg.buffer_capacity = self._current.nbytes
        ret = self._take(handle, ctypes.byref(msg), ctypes.byref(self._info), None)
        block, self._current = self._current, None
        if ret == RCL_RET_SUBSCRIPTION_TAKE_FAILED:
            return None
        if ret != RCL_RET_OK:
            text = self._errors.rcutils_get_error_string().text.decode(errors='replace')
            self._errors.rcutils_reset_error()
            raise TakeError(f'rcl_take_serialized_message returned {ret}: {text}')
        n = msg.buffer_length
        self._expect[handle] = max(n, 1)  # its next frame is most likely the same size
        return block[:n], self._info_dict()

    def _info_dict(self) -> dict:
        info = self._info
        return {'source_timestamp': info.source_timestamp,
                'received_timestamp': info.received_timestamp,
                'publication_sequence_number': None  # rmw_cyclonedds has none
                if info.publication_sequence_number == SEQUENCE_UNSUPPORTED
                else info.publication_sequence_number,
                'reception_sequence_number': info.reception_sequence_number,
                'publisher_gid': {'implementation_identifier':
                                  (info.implementation or b'').decode(errors='replace'),
                                  'data': bytes(info.gid)}}
