"""The codec, pixel size and decoding cost of a compressed image, read from its headers
without decoding.

A decoder allocates the whole pixel buffer from the size its header claims, before it
reads any pixel data: a 5 KB JPEG whose frame header says 30000x30000 costs gigabytes.
And its work follows the headers too: a progressive JPEG passes over the whole image once
per scan (a 228 KB file with 883 scans took 19 s), a 16-bit RGBA PNG decodes to 8 bytes a
pixel. So the limits are checked here, on the header bytes, before the decoder runs
(`survey`; the policy that refuses is admission.py's).

Read: JPEG (the first SOFn marker, found the way libjpeg finds it), PNG (IHDR), BMP (the
DIB header) and WebP (VP8, VP8L, VP8X). Other codecs are not recognised, so the caller
can refuse them rather than decode an image of unknown size.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np

JPEG, PNG, BMP, WEBP = 'JPEG', 'PNG', 'BMP', 'WebP'
CODECS = (JPEG, PNG, BMP, WEBP)

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# Frame headers: SOF0-3, 5-7, 9-11, 13-15 (0xC4 DHT, 0xC8 JPG and 0xCC DAC are not frames).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length
_JPEG_SOI, _JPEG_EOI, _JPEG_SOS = 0xD8, 0xD9, 0xDA


def _bytes(data) -> np.ndarray:
    """Any buffer-protocol object as a flat uint8 array, without copying."""
    return np.frombuffer(data, dtype=np.uint8)


def codec_of(data) -> str | None:
    """One of CODECS, recognised from the first bytes, or None."""
    head = _bytes(data)[:16].tobytes()
    if head.startswith(b'\xff\xd8'):
        return JPEG
    if head.startswith(_PNG_SIGNATURE):
        return PNG
    if head.startswith(b'BM'):
        return BMP
    if head.startswith(b'RIFF') and head[8:12] == b'WEBP':
        return WEBP
    return None


def _uint(buf, at: int, size: int, order: Literal['big', 'little']) -> int | None:
    """The unsigned integer of `size` bytes at `at` of a uint8 array or memoryview, or None
    past the end."""
    if at < 0 or at + size > len(buf):
        return None
    return int.from_bytes(buf[at:at + size], order)


class _Markers:
    """The JPEG markers of a buffer for a walk that only moves forward: every 0xFF followed
    by a marker code, i.e. not stuffing (FF 00), not a restart marker (FF D0-D7) and not a
    fill byte before another 0xFF. Inside entropy-coded data only these are markers, so a
    scan ends at the first one after its header; between segments libjpeg skips any other
    bytes to the next marker, as next() does.

    They are searched for with numpy, a block at a time from where the walk is, each byte
    at most once: what the walk jumps over or never reaches (segments it skips, bytes after
    EOI, the rest of a stream it stops reading) is not searched, and the arrays of a block
    are bounded whatever the stream's size (~5 MB)."""

    BLOCK = 1 << 20  # a 1080p JPEG (~0.5 MB) in one
    # A camera's JPEG has ~10 markers: a block's are all listed at once. Past this many
    # 8-byte words with a marker (a hostile stream), they are looked up one call at a time.
    LISTED_WORDS = 4096

    def __init__(self, buf: np.ndarray) -> None:
        self.buf = buf
        self.end = int(buf.size) - 1  # a marker needs the byte after its 0xFF
        self.lo = self.hi = 0  # the block searched: [lo, hi)
        self.listed = np.empty(0, np.intp)  # its markers, ascending (None: look them up)
        # A dense block's markers, when not listed: True at each (at index - lo), and the
        # indices of the 8-byte words of that mask that hold one.
        self.mask = self.words = None

    def next(self, start: int) -> int | None:
        """Index of the 0xFF of the first marker at or after start, or None."""
        if start > self.hi:  # jumped past the block: search on from there
            self.lo = self.hi = start
            self.listed = np.empty(0, np.intp)
        while (at := self._in_block(start)) is None:
            if self.hi >= self.end:
                return None
            self._search(self.hi, min(self.end, self.hi + self.BLOCK))
        return at

    def _in_block(self, start: int) -> int | None:
        if self.listed is not None:
            k = int(np.searchsorted(self.listed, start))
            return int(self.listed[k]) if k < self.listed.size else None
        offset = start - self.lo  # the first word at or after it holding a marker at or
        k = int(np.searchsorted(self.words, offset >> 3))  # after it: this one or the next
        for word in self.words[k:k + 2].tolist():
            for bit in np.flatnonzero(self.mask[word * 8:word * 8 + 8]).tolist():
                if word * 8 + bit >= offset:
                    return self.lo + word * 8 + bit
        return None

    def _search(self, start: int, stop: int) -> None:
        """Find the markers whose 0xFF lies in [start, stop); stop < buf.size."""
        n = stop - start
        mask = np.zeros(-(-n // 8) * 8, bool)  # whole 8-byte words, for the search below
        ff = np.equal(self.buf[start:stop], 0xFF, out=mask[:n])
        code = self.buf[start + 1:stop + 1]
        ff &= code != 0x00
        # With stuffing gone markers are rare in a camera's JPEG (~10 against ~6000 stuffed
        # 0xFF at 1080p): find the 8-byte words that hold one, then their bytes, rather
        # than test every byte (np.flatnonzero over them all costs as much as the rest).
        words = np.flatnonzero(mask.view(np.uint64) != 0)
        self.lo, self.hi = start, stop
        if words.size <= self.LISTED_WORDS:
            at = (words[:, None] * 8 + np.arange(8)).ravel()
            at = at[mask[at]]
            code = code[at]
            self.listed = at[(code != 0xFF) & ((code < 0xD0) | (code > 0xD7))] + start
            self.mask = self.words = None
            return
        # Dense: fill bytes, restart markers, or a hostile stream. Filter byte by byte and
        # keep the words for _in_block, rather than list every marker of the block (a
        # stream of them, in segments that the walk skips, would be listed for nothing).
        ff &= (code != 0xFF) & ((code < 0xD0) | (code > 0xD7))
        self.mask, self.words = mask, np.flatnonzero(mask.view(np.uint64) != 0)
        self.listed = None


def _jpeg_walk(buf: np.ndarray, max_scans: int | None, max_segments: int | None) -> tuple:
    """Walk the marker segments after SOI as libjpeg reads them: up to the first frame
    header (SOFn) bytes between segments and fill bytes are skipped, and a scan, a second
    SOI or the end before it is an error (size None). max_scans None: stop at the frame
    header. Else go on through each scan's header and entropy-coded data to EOI, counting
    the scans, stopping one past max_scans. Every marker is one step of this loop (libjpeg
    reads one in a few instructions): the walk stops one past max_segments (None: never).

    -> ((width, height) or None, (SOF marker, precision, components) or None, scans,
    segments)."""
    mv = memoryview(buf)  # its items are Python ints: ~20 times faster than numpy scalars
    markers = _Markers(buf)
    i, size, sof, scans, segments = 2, None, None, 0, 0
    while (at := markers.next(i)) is not None:
        segments += 1
        if max_segments is not None and segments > max_segments:
            break
        marker, i = mv[at + 1], at + 2
        if size is None:
            if marker in _JPEG_SOF:  # length(2) precision(1) height(2) width(2)
                height, width = _uint(mv, i + 3, 2, 'big'), _uint(mv, i + 5, 2, 'big')
                if height is None or width is None:
                    break
                size = (width, height)
                if max_scans is None:
                    break
            elif marker in (_JPEG_SOI, _JPEG_EOI, _JPEG_SOS):
                break  # a second SOI, the end, or a scan: no frame header came first
        if marker == _JPEG_EOI:
            break
        if marker in _JPEG_STANDALONE:
            continue  # RSTn, TEM: no length to skip
        length = _uint(mv, i, 2, 'big')
        if length is None or length < 2:
            break
        if marker in _JPEG_SOF and sof is None:
            sof = (marker, _uint(mv, i + 2, 1, 'big'), _uint(mv, i + 7, 1, 'big'))
        i += length
        if marker == _JPEG_SOS:  # its entropy-coded data ends at the next marker
            scans += 1
            if scans > max_scans:
                break
    return size, sof, scans, segments


def _jpeg_size(buf: np.ndarray) -> tuple[int, int] | None:
    return _jpeg_walk(buf, None, None)[0]


def _png_size(buf: np.ndarray) -> tuple[int, int] | None:
    # The signature, then IHDR first: length(4) 'IHDR' width(4) height(4), big-endian.
    if buf[12:16].tobytes() != b'IHDR':
        return None
    width, height = _uint(buf, 16, 4, 'big'), _uint(buf, 20, 4, 'big')
    return None if width is None or height is None else (width, height)


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _bmp_size(buf: np.ndarray) -> tuple[int, int] | None:
    # 14-byte file header, then the DIB header: its size says which layout it has.
    dib = _uint(buf, 14, 4, 'little')
    if dib == 12:  # BITMAPCOREHEADER: 16-bit unsigned width and height
        width, height = _uint(buf, 18, 2, 'little'), _uint(buf, 20, 2, 'little')
        return None if width is None or height is None else (width, height)
    if dib is None or dib < 16:
        return None
    width, height = _uint(buf, 18, 4, 'little'), _uint(buf, 22, 4, 'little')
    if width is None or height is None:
        return None
    # Signed 32-bit; a negative height means rows stored top-down, the size is the same.
    return _signed(width, 32), abs(_signed(height, 32))


def _webp_size(buf: np.ndarray) -> tuple[int, int] | None:
    # 'RIFF' size 'WEBP', then the first chunk: fourcc(4) size(4) payload at offset 20.
    fourcc = buf[12:16].tobytes()
    if fourcc == b'VP8X':  # extended: 24-bit canvas width-1 and height-1
        width, height = _uint(buf, 24, 3, 'little'), _uint(buf, 27, 3, 'little')
        return None if width is None or height is None else (width + 1, height + 1)
    if fourcc == b'VP8L':  # lossless: signature 0x2F, then 14-bit width-1 and height-1
        bits = _uint(buf, 21, 4, 'little')
        if buf.size < 21 or buf[20] != 0x2F or bits is None:
            return None
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if fourcc == b'VP8 ':  # lossy: 3-byte frame tag, start code 9D 01 2A, 14-bit sizes
        if buf[23:26].tobytes() != b'\x9d\x01\x2a':
            return None
        width, height = _uint(buf, 26, 2, 'little'), _uint(buf, 28, 2, 'little')
        return None if width is None or height is None else (width & 0x3FFF, height & 0x3FFF)
    return None


_SIZE_READERS = {JPEG: _jpeg_size, PNG: _png_size, BMP: _bmp_size, WEBP: _webp_size}


_PNG_MAX_CHUNK = (1 << 31) - 1  # the PNG specification's limit on a chunk length
_PNG_CHUNK_HEAD = struct.Struct('>I4s')  # length, type


def png_chunk_error(data) -> str | None:
    """Why a PNG's chunk list cannot be trusted, or None: every chunk up to IEND must fit
    in the data. A reader that believes a chunk length (OpenCV 5's does) allocates it:
    a 3 KB PNG whose IDAT claims 4 GB costs 4 GB and seconds. One Python step a chunk
    (~0.3 us; a chunk is at least 12 bytes)."""
    mv = memoryview(_bytes(data))
    size, i = len(mv), len(_PNG_SIGNATURE)
    read_head = _PNG_CHUNK_HEAD.unpack_from
    while i + 8 <= size:
        length, kind = read_head(mv, i)
        left = size - i - 12
        if length > _PNG_MAX_CHUNK or length > left:
            return (f"PNG chunk {kind.decode('latin-1')!r} at byte {i} claims {length} bytes, "
                    f'{max(left, 0)} left')
        if kind == b'IEND':
            return None
        i += 12 + length
    return 'PNG data ends before its IEND chunk (truncated)'


def image_size(data) -> tuple[int, int] | None:
    """(width, height) that the header of a JPEG, PNG, BMP or WebP image claims, read
    without decoding; None for other codecs or a header too damaged to read.

    data: any buffer-protocol object (bytes, memoryview, array.array, uint8 ndarray).
    The size may be zero or negative in a hostile header: the caller decides. A JPEG's
    markers up to its frame header are read one Python step each, however many there are:
    judge untrusted images with admission.admit, which bounds them.
    """
    codec = codec_of(data)
    return None if codec is None else _SIZE_READERS[codec](_bytes(data))


@dataclass(frozen=True)
class Survey:
    """What the headers of a compressed image say about the cost of decoding it.

    channels: samples per pixel the decoder produces; bits: bits per sample; scans: JPEG
    scans in the whole stream (a baseline colour JPEG has 1, a progressive one ~10);
    progressive: a progressive JPEG (every scan passes over the whole coefficient buffer);
    interlaced: an Adam7 PNG; compression: the BMP compression method (0 none, 1 RLE8,
    2 RLE4, 3 bit fields, ...); segments: JPEG marker segments read, SOI and RSTn not
    counted (a camera's JPEG has about ten)."""

    codec: str
    width: int
    height: int
    channels: int
    bits: int = 8
    scans: int = 1
    progressive: bool = False
    interlaced: bool = False
    compression: int = 0
    segments: int = 0


# SOF markers of progressive frames (SOF2, SOF6, SOF10, SOF14).
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})


def _jpeg_survey(buf: np.ndarray, max_scans: int, max_segments: int | None) -> Survey | None:
    size, sof, scans, segments = _jpeg_walk(buf, max_scans, max_segments)
    stopped = max_segments is not None and segments > max_segments
    if not stopped and (size is None or sof is None):
        return None
    # Where the walk stopped at max_segments, what it had read (the size may be 0x0).
    marker, precision, components = sof or (0, 0, 0)
    return Survey(JPEG, *(size or (0, 0)), channels=components or 0, bits=precision or 0,
                  scans=scans, progressive=marker in _JPEG_PROGRESSIVE, segments=segments)


# PNG colour types -> samples per pixel (greyscale, RGB, palette, grey + alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_survey(buf: np.ndarray) -> Survey | None:
    # IHDR: width(4) height(4) bit depth(1) colour type(1) compression filter interlace
    size = _png_size(buf)
    if size is None or buf.size < 29:
        return None
    bits, colour, interlace = int(buf[24]), int(buf[25]), int(buf[28])
    return Survey(PNG, *size, channels=_PNG_CHANNELS.get(colour, 0), bits=bits,
                  interlaced=interlace == 1)


def _bmp_survey(buf: np.ndarray) -> Survey | None:
    size = _bmp_size(buf)
    if size is None:
        return None
    dib = _uint(buf, 14, 4, 'little')
    bits = _uint(buf, 24 if dib == 12 else 28, 2, 'little') or 0
    compression = (_uint(buf, 30, 4, 'little') or 0) if dib and dib >= 40 else 0
    return Survey(BMP, *size, channels=4 if bits == 32 else 3, bits=8,
                  compression=compression)


def survey(data, max_scans: int = 1 << 16, max_segments: int | None = None
           ) -> Survey | None:
    """The decoding cost of a JPEG, PNG, BMP or WebP image from its headers; None for other
    codecs or headers too damaged to read. A JPEG's scans are counted up to max_scans + 1,
    its marker segments up to max_segments + 1 (None: all, one Python step each: give
    untrusted data a bound, as admission.admit does): past that the walk stopped, and the
    other fields say what it had read by then (the size may be 0x0)."""
    buf = _bytes(data)
    codec = codec_of(buf)
    if codec == JPEG:
        return _jpeg_survey(buf, max_scans, max_segments)
    if codec == PNG:
        return _png_survey(buf)
    if codec == BMP:
        return _bmp_survey(buf)
    if codec == WEBP:
        size = _webp_size(buf)
        return None if size is None else Survey(WEBP, *size, channels=4)
    return None
