"""Data larger than memory: images read from their files a batch at a time, and stage 1's feature
cache in files on disk.

Both stand in for the in-memory arrays of the rest of the kit: they have len(), shape and dtype,
and rows(indices) gives a batch as an array. Indexing ImageFiles picks files without reading
them, so that a split can be carved before a single image is decoded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tinynet.images import decode_all, stack_images
from tinynet.sources import Reader

IN_MEMORY_LIMIT = 4 * 2**30  # bytes of decoded images above which a folder is streamed (--stream auto)


class ImageFiles:
    """Images as files, decoded when a batch is asked for, made square the loader's way."""

    def __init__(self, names: Sequence[str], readers: Sequence[Reader], image_size: int, square: str):
        self.names, self.readers, self.image_size, self.square = list(names), list(readers), image_size, square
        self.shape = (len(self.readers), None, None, 3)  # a batch's size: see rows()
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.readers)

    def __getitem__(self, index) -> ImageFiles:
        picked = np.atleast_1d(np.arange(len(self.readers))[index])
        return ImageFiles([self.names[i] for i in picked], [self.readers[i] for i in picked], self.image_size,
                          self.square)

    def decode(self) -> list[np.ndarray | None]:
        """Each image as the in-memory loader decodes it (a small square at its own size, anything
        else made square at image_size), or None for a file that is not a readable image."""
        return decode_all([read() for read in self.readers], self.image_size, self.square)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The readable images at these indices, stacked as the in-memory loader stacks a set
        (small squares of one size stay at it, for the model to resize; else all at image_size),
        and a mask of the indices that were readable."""
        images = self[indices].decode()
        good = [image for image in images if image is not None]
        stacked = (stack_images(good, self.image_size, len({image.shape for image in good}) == 1) if good
                   else np.zeros((0, self.image_size, self.image_size, 3), self.dtype))
        return stacked, np.array([image is not None for image in images], dtype=bool)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The images at these indices, as read(); an unreadable one (stage 1 skips and records
        them) is black."""
        stacked, readable = self.read(indices)
        if readable.all():
            return stacked
        rows = np.zeros((len(readable), *stacked.shape[1:]), self.dtype)
        rows[readable] = stacked
        return rows


class FeatureFile:
    """float32 rows in a file, appended in order and read back by rows. Read with pread rather than
    mapped: mapped pages count as the process's resident memory, the page cache does not."""

    def __init__(self, path: Path, row_shape: tuple[int, ...]):
        self.path, self.row_shape = path, tuple(row_shape)
        self.row_bytes = int(np.prod(row_shape)) * 4
        self.dtype = np.dtype(np.float32)
        self.length = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.length, *self.row_shape)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: slice) -> np.ndarray:
        return self.rows(np.arange(self.length)[index])

    def append(self, rows: np.ndarray) -> None:
        os.pwrite(self.fd, np.ascontiguousarray(rows, np.float32).tobytes(), self.length * self.row_bytes)
        self.length += len(rows)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), *self.row_shape), np.float32)
        flat = out.reshape(len(indices), -1)
        indices = np.asarray(indices)
        if len(indices) and np.all(np.diff(indices) == 1):  # a run in order: one read
            os.preadv(self.fd, [flat], int(indices[0]) * self.row_bytes)
            return out
        for row, index in zip(flat, indices, strict=True):
            os.preadv(self.fd, [row], int(index) * self.row_bytes)
        return out

    def close(self) -> None:
        os.close(self.fd)


def take(array: np.ndarray | ImageFiles | FeatureFile, indices: np.ndarray) -> np.ndarray:
    """array[indices] for an array in memory or on disk."""
    return array[indices] if isinstance(array, np.ndarray) else array.rows(indices)


def streams(count: int, image_size: int, choice: str) -> bool:
    """Whether `count` images at image_size are read from their files rather than held in memory:
    --stream on or off, or (auto) when they would take more than IN_MEMORY_LIMIT."""
    return choice == "on" or (choice == "auto" and count * image_size**2 * 3 > IN_MEMORY_LIMIT)
