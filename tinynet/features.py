"""Stage 1's forward pass: the frozen front of the model over every image, once, into features.

While the base is frozen an image's features never change: one pass computes them all, in memory
or into files for a folder too large for memory, and the head then trains on them alone. The pass
runs on whatever `call` is given (tinynet.runtime picks LiteRT or TensorFlow); under --distribute
each process computes its share and all get every feature.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from tinynet.distributed import DataParallelRun, gather, local_call
from tinynet.streaming import FeatureFile, ImageFiles

PASS_BATCH_SIZE = 128  # images per step of the forward pass: 256 was slower and took more memory

STREAM_CHUNK = 1024  # images decoded at a time when streamed: 150 MB at 224 pixels


def extract_features(extractor: keras.Model, images: np.ndarray, batch_size: int,
                     progress: keras.utils.Progbar | None = None,
                     call: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """One streamed forward pass: features are written batch by batch into one preallocated array,
    so the upscaled images never exist all at once and the output is never copied. `call` runs a
    batch (default: extractor.predict_on_batch)."""
    features = np.empty((len(images), *extractor.output_shape[1:]), dtype=np.float32)
    progress = progress or keras.utils.Progbar(len(images), unit_name="image")
    call = call or extractor.predict_on_batch
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        size = len(batch)
        if size < batch_size:  # padded: a batch of a new shape would trace the whole pass again
            batch = np.concatenate([batch, np.zeros((batch_size - size, *batch.shape[1:]), batch.dtype)])
        features[start:start + size] = call(batch)[:size]
        progress.add(size)
    return features


def stream_features(extractor: keras.Model, images: ImageFiles, batch_size: int, path: Path,
                    call: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[FeatureFile, np.ndarray]:
    """The forward pass over images read from their files, STREAM_CHUNK at a time, the next chunk
    decoded on another thread while the base runs on this one (through `call`, as extract_features).
    The features go to a file at `path`; unreadable images are left out. Returns the file and a
    mask of the images it holds."""
    features = FeatureFile(path, extractor.output_shape[1:])
    readable = np.zeros(len(images), dtype=bool)
    progress = keras.utils.Progbar(len(images), unit_name="image")
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(images.read, np.arange(min(STREAM_CHUNK, len(images))))
        for start in range(0, len(images), STREAM_CHUNK):
            batch, readable[start:start + STREAM_CHUNK] = pending.result()
            pending = reader.submit(images.read, np.arange(start + STREAM_CHUNK,
                                                           min(start + 2 * STREAM_CHUNK, len(images))))
            features.append(extract_features(extractor, batch, batch_size, progress, call))
            progress.add(int(np.sum(~readable[start:start + STREAM_CHUNK])))
    return features, readable


def features_of_all(extractor: keras.Model, images: dict[str, np.ndarray], batch_size: int,
                    run: DataParallelRun) -> dict[str, np.ndarray]:
    """Stage 1's forward pass split between the processes: each computes the features of its share
    of every split, and every process ends with all of them."""
    call = local_call(extractor)
    features = {}
    for split, x in images.items():
        share = -(-len(x) // run.processes)
        part = extract_features(extractor, x[run.process * share:(run.process + 1) * share], batch_size, call=call)
        padded = np.zeros((share, *part.shape[1:]), part.dtype)  # every process must bring one size
        padded[:len(part)] = part
        features[split] = gather(padded)[:len(x)]
    return features
