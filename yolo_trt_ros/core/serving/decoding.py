"""CompressedImage frames decoded per camera, off the shared path: one camera's slow or
hostile frame cannot delay another camera's frames.

Each camera has a thread that takes its newest frame, parses it, judges its size and
decoding cost from its headers (image/admission.py: a bomb is refused in microseconds) and
decodes it on the CPU in a child process of its own: decodes of several cameras run in
parallel, a decode that outlives `timeout_s` is killed and refused ('too_slow'), the
child's memory is capped, and what the C decoders print is caught in the child (the
capture of fd 2 is one per process). Decoded frames go to a second keep-newest slot per
camera, from which the detector's worker takes every camera's newest.

Where the detector decodes JPEG on the GPU, a JPEG's headers are judged in the callback
(about 0.1 ms for 1080p on the dev machine) and the frame goes straight to that second
slot, undecoded, for the worker to decode with the batch there (not judged again: the
batch tells the GPU decoder which frames were); a refused one is a note, as from the
camera's thread. That thread would only have judged the headers, at the cost of one more
thread hand-over per frame (issue 21 item 2: 1.5 ms waiting for the worker on the H200
host against 0.6 ms for a raw frame). Other codecs still take the camera's thread and
process.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from yolo_trt_ros.core.errors import ImageError
from yolo_trt_ros.core.image.admission import admit
from yolo_trt_ros.core.image.buffers import ImageView
from yolo_trt_ros.core.image.header import JPEG, codec_of
from yolo_trt_ros.core.serving.cdr import RawCompressed, Stamped, parse_compressed
from yolo_trt_ros.core.serving.frames import Frame, LatestFrames

_LOG = logging.getLogger(__name__)
DECODE_TIMEOUT_S = 1.0  # a decode that takes longer is killed and its frame refused
STARTUP_TIMEOUT_S = 60.0  # a decoder process imports OpenCV and numpy: ~0.5 s, more on load
_CONTEXT = multiprocessing.get_context('spawn')  # no fork of a process with threads


@dataclass(frozen=True)
class Decoded:
    """A frame after its decode step: its header and pixels, a JPEG payload left for the
    GPU (RawCompressed), or why it was refused."""

    header: Stamped | None
    image: ImageView | RawCompressed | ImageError


def _child_main(conn, memory_budget: int) -> None:
    """The decoding child: decode what the parent sends into the shared buffer it names."""
    import resource

    from yolo_trt_ros.core.image.decode import decode_compressed

    with open('/proc/self/status') as status:
        vm = int(next(line for line in status if line.startswith('VmSize')).split()[1])
    limit = vm * 1024 + memory_budget  # what the process has, plus one decode's worth
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send(('ready',))
    shm: shared_memory.SharedMemory | None = None
    while True:
        request = conn.recv()
        if request is None:
            break
        data, fmt, max_pixels, shm_name = request
        try:
            view = decode_compressed(data, fmt, max_pixels)
        except ImageError as exc:
            conn.send(('error', exc.cause, str(exc)))
            continue
        except MemoryError:
            conn.send(('error', 'too_costly', 'decoding ran out of its memory budget'))
            continue
        if shm is None or shm.name != shm_name:
            if shm is not None:
                shm.close()
            # The spawned child shares its parent's resource tracker, which already tracks
            # the buffer (the parent made it, and unlinks it): attaching adds nothing there.
            shm = shared_memory.SharedMemory(name=shm_name)
        pixels = np.ascontiguousarray(view.pixels)
        np.frombuffer(shm.buf, np.uint8, pixels.nbytes)[:] = pixels.reshape(-1)
        conn.send(('ok', pixels.shape, view.order))
    if shm is not None:
        shm.close()


def _sample_jpeg() -> bytes:
    """A small JPEG (64x64, grey) for warming a decoder."""
    import cv2

    return cv2.imencode('.jpg', np.full((64, 64, 3), 128, np.uint8))[1].tobytes()


class _ChildDecoder:
    """One child process and the shared buffer its decoded pixels come back in."""

    def __init__(self, memory_budget: int) -> None:
        self._memory_budget = memory_budget
        self._proc = self._conn = None
        self._ready = False
        self._shm: shared_memory.SharedMemory | None = None

    def start(self) -> None:
        """Start the child; ready() waits until it can decode (about 0.5 s of imports)."""
        parent, child = _CONTEXT.Pipe()
        proc = _CONTEXT.Process(target=_child_main, args=(child, self._memory_budget),
                                name='yolo-trt-decoder', daemon=True)
        try:
            proc.start()
        except OSError as exc:  # no process to be had (a pids limit, memory): none kept
            parent.close()
            raise ImageError(f'the decoder process could not be started: {exc}',
                             'decode') from None
        finally:
            child.close()
        self._proc, self._conn, self._ready = proc, parent, False

    def _wait_ready(self) -> None:
        if not self._ready:  # its start-up does not count against a frame's deadline
            try:
                if not self._conn.poll(STARTUP_TIMEOUT_S):
                    raise EOFError
                self._conn.recv()
            except (EOFError, OSError):  # not started in time, or died starting
                self.stop(kill=True)
                raise ImageError('the decoder process did not start', 'decode') from None
            self._ready = True

    def warm(self, max_pixels: int) -> None:
        """Start the child if it is not running, wait until it has started and has decoded
        a small JPEG (its decoder loaded, the shared buffer made): its first real frame then
        decodes as fast as the rest. ImageError where it cannot."""
        if self._proc is None or not self._proc.is_alive():
            self.start()
        sample = _sample_jpeg()
        self._request(sample, 'jpeg', max(max_pixels, 64 * 64), 64 * 64 * 4, STARTUP_TIMEOUT_S)

    def _buffer(self, nbytes: int) -> shared_memory.SharedMemory:
        if self._shm is None or self._shm.size < nbytes:
            self._release_buffer()
            self._shm = shared_memory.SharedMemory(create=True, size=max(nbytes, 1))
        return self._shm

    def decode(self, data: bytes, fmt: str, max_pixels: int, nbytes: int,
               timeout_s: float) -> ImageView:
        """Decode in the child; ImageError with its reason, or 'too_slow' after timeout_s
        (the child is killed and a new one started for the next frame)."""
        if self._proc is None or not self._proc.is_alive():
            # A new child (lazily, or after one was killed): its start and first decode
            # (the decoder's code loaded) are not this frame's, whose deadline is its own.
            self.warm(max_pixels)
        return self._request(data, fmt, max_pixels, nbytes, timeout_s)

    def _request(self, data: bytes, fmt: str, max_pixels: int, nbytes: int,
                 timeout_s: float) -> ImageView:
        """One decode by the running child (never starts one)."""
        self._wait_ready()
        shm = self._buffer(nbytes)
        self._conn.send((data, fmt, max_pixels, shm.name))
        if not self._conn.poll(timeout_s):
            self.stop(kill=True)
            raise ImageError(f'decoding took longer than {timeout_s} s (decode_timeout_s): '
                             f'refused, and the decoder restarted', 'too_slow')
        try:
            reply = self._conn.recv()
        except EOFError:  # the child died (a crash in a decoder library)
            self.stop(kill=True)
            raise ImageError('the decoder process died on this frame', 'decode') from None
        if reply[0] == 'error':
            raise ImageError(reply[2], reply[1])
        _, shape, order = reply
        pixels = np.frombuffer(shm.buf, np.uint8, int(np.prod(shape))).reshape(shape).copy()
        return ImageView(pixels, order)

    def _release_buffer(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def stop(self, kill: bool = False) -> None:
        """kill: at once, keeping the shared buffer for the next child; otherwise ask the
        child to end and release the buffer (also where the child had died already)."""
        if self._proc is not None:
            if not kill:
                try:
                    self._conn.send(None)
                except OSError:  # it died already: joined (or killed) below
                    pass
                self._proc.join(2.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
            self._conn.close()
            self._proc = self._conn = None
        if not kill:
            self._release_buffer()


class CameraDecoders:
    """The decode step of every camera between the raw slots (callbacks put serialized
    CompressedImages) and the decoded slots (the worker takes from them).

    lazy: start each camera's process at its first frame rather than at start() (where
    the GPU decodes JPEG, only another codec needs one)."""

    def __init__(self, raw: LatestFrames, decoded: LatestFrames, max_pixels: int,
                 lazy: bool = False, timeout_s: float = DECODE_TIMEOUT_S) -> None:
        self.raw, self.decoded = raw, decoded
        self.max_pixels, self.lazy, self.timeout_s = max_pixels, lazy, timeout_s
        cameras = len(raw.received)
        # One decode's memory: the decoded frame and a converted copy, plus OpenCV's own.
        budget = 8 * 4 * max_pixels + (256 << 20)
        self._children = [_ChildDecoder(budget) for _ in range(cameras)]
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name=f'decode-camera-{i}') for i in range(cameras)]

    def start(self) -> None:
        """Start the children (about 0.5 s each, in parallel) and return when every one has
        decoded a first frame, then start the threads: a frame that arrives from now on is
        decoded as fast as the rest (issue 21: frames that came while the children were
        still starting were replaced in the keep-newest slot, never answered)."""
        if not self.lazy:
            for child in self._children:
                child.start()  # all at once: their imports overlap
            for child in self._children:
                child.warm(self.max_pixels)
        for thread in self._threads:
            thread.start()

    def pass_on(self, payload) -> Decoded | None:
        """Where the GPU decodes JPEG: a serialized CompressedImage carrying a JPEG ->
        Decoded with the message still encoded (its headers judged: a bomb is refused here
        with its reason), None for anything else (the camera's step decodes or refuses
        it)."""
        try:
            message = parse_compressed(payload)
        except ImageError:
            return None
        if codec_of(message.data) != JPEG:
            return None
        try:
            admit(message.data, self.max_pixels, message.format)
        except ImageError as exc:
            return Decoded(message.header, exc.with_traceback(None))
        return Decoded(message.header, message)

    def decode(self, camera: int, payload) -> Decoded:
        """One serialized CompressedImage -> Decoded (never raises for bad input)."""
        header = None
        try:
            message = parse_compressed(payload)
            header = message.header
            # Judged here from the headers, again in full in the child, which also walks a
            # PNG's chunks: a hostile chunk list then costs the camera's process, not the
            # node's time under the GIL.
            survey = admit(message.data, self.max_pixels, message.format, png_chunks=False)
            nbytes = survey.width * survey.height * 4
            image = self._children[camera].decode(bytes(message.data), message.format,
                                                  self.max_pixels, nbytes, self.timeout_s)
            return Decoded(header, image)
        except ImageError as exc:
            return Decoded(header, exc.with_traceback(None))
        except Exception as exc:  # the camera thread's boundary: a fault must not end it
            self._children[camera].stop(kill=True)  # in an unknown state: a new one next
            return Decoded(header, ImageError(f'the decode step failed ({exc}); the decoder '
                                              f'restarted', 'decode'))

    def hand_on(self, camera: int, result: Decoded, received: float) -> None:
        if isinstance(result.image, ImageError):  # never in place of a decoded frame
            self.decoded.note(camera, result, received)
        else:
            self.decoded.put(camera, result, received)

    def _run(self, camera: int) -> None:
        while not self.raw.closed:
            frame = self.raw.take_one(camera, timeout=0.5)
            if frame is not None:
                self.hand_on(camera, self.decode(camera, frame.payload), frame.received)

    def close(self) -> None:
        self.raw.close()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        for child in self._children:
            child.stop()


class Intake:
    """Where a detector's frames wait for its worker: keep-newest slots per camera, and for
    CompressedImage input the per-camera decode step in between. put() is what the
    subscription callbacks call; take() what the worker calls."""

    def __init__(self, cameras: int, compressed: bool, max_pixels: int,
                 gpu_jpeg: Callable[[], bool] = lambda: False,
                 timeout_s: float = DECODE_TIMEOUT_S) -> None:
        self.raw: LatestFrames = LatestFrames(cameras)
        self.decoders: CameraDecoders | None = None
        self._out = self.raw
        # JPEGs passed on by the callbacks, for the worker's GPU batch (counted here: the
        # callbacks run on one thread, the node's frame reader)
        self._direct: list[int] | None = None
        if compressed:
            self._out = LatestFrames(cameras)
            if gpu_jpeg():
                self._direct = [0] * cameras
            self.decoders = CameraDecoders(self.raw, self._out, max_pixels,
                                           self._direct is not None, timeout_s)
            try:
                self.decoders.start()  # returns when every decoder has decoded a frame
            except BaseException:
                self.close()
                raise

    def put(self, camera: int, data) -> None:
        passed = self.decoders.pass_on(data) if self._direct is not None else None
        if passed is None:
            self.raw.put(camera, data)
            return
        self._direct[camera] += 1
        self.decoders.hand_on(camera, passed, time.monotonic())

    def take(self, timeout: float | None = None) -> list[Frame]:
        return self._out.take(timeout)

    @property
    def closed(self) -> bool:
        return self._out.closed

    def received(self, camera: int) -> int:
        return self.raw.received[camera] + (self._direct[camera] if self._direct else 0)

    def dropped(self, camera: int) -> int:
        """Frames replaced by newer ones before they were processed, at either slot."""
        extra = self._out.dropped[camera] if self._out is not self.raw else 0
        return self.raw.dropped[camera] + extra

    def close(self) -> None:
        self.raw.close()
        if self.decoders is not None:
            self.decoders.close()
        self._out.close()
