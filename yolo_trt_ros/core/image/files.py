"""Image files on disk: which suffixes count as images, and a folder's images in order."""
from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def image_files(directory: str | Path) -> list[Path]:
    """The image files directly in directory, sorted by name; OSError if unreadable."""
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
