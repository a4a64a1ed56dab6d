"""Image files on disk: which suffixes count as images, a folder's images in order, and
annotated images written out."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yolo_trt_ros.core.files import FileError, atomic_write

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def image_files(directory: str | Path) -> list[Path]:
    """The image files directly in directory, sorted by name; OSError if unreadable."""
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def shown(name: str) -> str:
    """A file name as text that can be printed anywhere: bytes that are not UTF-8 (kept by
    Python as surrogates) shown as U+FFFD."""
    return name.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')


class ImageWriter:
    """Annotated images into one directory, one file per input image: never one input's
    over another's (a second `x.jpg`, `x.png` becomes `x-1.jpg`), encoded in memory and
    written atomically by this process (OpenCV's imwrite crashed on a name that is not
    UTF-8), any failure a FileError naming the file and the cause."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._used: set[str] = set()

    def name_for(self, source: str) -> Path:
        stem, n = Path(source).stem or 'image', 0
        name = f'{stem}.jpg'
        while name in self._used:
            n += 1
            name = f'{stem}-{n}.jpg'
        self._used.add(name)
        return self.directory / name

    def write(self, source: str, bgr: np.ndarray) -> Path:
        out = self.name_for(source)
        ok, data = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise FileError(f'cannot encode {shown(str(out))} as JPEG')
        try:
            atomic_write(out, data.tobytes())
        except OSError as exc:
            raise FileError(f'cannot write {shown(str(out))}: {exc.strerror}') from None
        return out
