"""Batches as tf.data pipelines: shuffled and augmented training epochs, and arrays in order for
validation, evaluation and prediction."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tinynet.streaming import FeatureFile, ImageFiles, take

Rows = np.ndarray | ImageFiles | FeatureFile  # rows in memory, or read from files a batch at a time


def epoch_batches(x: Rows, y: np.ndarray, batch_size: int, seed: int, first_epoch: int, epochs: int,
                  augment: str | None = None, shard: slice | None = None) -> tf.data.Dataset:
    """Training batches for epochs first_epoch .. epochs-1, in one stream.

    Epoch e's order, and each image's augmentation, depend only on (seed, e): a resumed run sees
    exactly the batches an uninterrupted one would. With `shard` (data-parallel processes), each
    epoch has only full batches, and this process gets the shard's slice of each. `augment` flips
    each image, then moves it ("shift") or zooms into it ("crop"): see shifted() and zoomed();
    images stay uint8 throughout.
    """
    n = len(x)

    def augmented(images, labels, epoch_seed, indices):
        move = AUGMENTATIONS[augment]

        def one(args):
            image, index = args
            flip_seed, move_seed = tf.unstack(tf.random.experimental.stateless_split(epoch_seed + [0, index], 2))
            return move(tf.image.stateless_random_flip_left_right(image, flip_seed), move_seed)

        shape = images.shape
        augmented = tf.map_fn(one, (images, indices), fn_output_signature=images.dtype)
        return tf.ensure_shape(augmented, shape), labels

    def one_epoch(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch * n])
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), epoch_seed)
        if shard:
            order = order[:n // batch_size * batch_size]
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        if shard:
            batches = batches.map(lambda i: i[shard.start:shard.stop])
        if augment:
            return batches.map(lambda i: (*gathered((x, y), i), i), num_parallel_calls=tf.data.AUTOTUNE).map(
                lambda images, labels, i: augmented(images, labels, epoch_seed, i), num_parallel_calls=tf.data.AUTOTUNE)
        return batches.map(lambda i: gathered((x, y), i), num_parallel_calls=tf.data.AUTOTUNE)

    return prefetched(tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch))


def shifted(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The image moved by up to 1/8 of its size, a random window of it padded with black: the
    standard augmentation of CIFAR-sized images, and the one CIFAR-10's numbers were measured with."""
    height, width, channels = tf.unstack(tf.shape(image))  # streamed batches differ in size
    pad_h, pad_w = height // 8, width // 8
    padded = tf.image.pad_to_bounding_box(image, pad_h, pad_w, height + 2 * pad_h, width + 2 * pad_w)
    return tf.image.stateless_random_crop(padded, tf.stack([height, width, channels]), seed)


def zoomed(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """A random window of 1/4 to all of the image's area (aspect 3:4 to 4:3), resized back to the
    image's size: for photos, whose subject fills the frame in one shot and a corner of it in the
    next (Inception's crop, its smallest window 8% of the area there; here larger, as on a few
    hundred photos a window of one petal teaches noise)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.25, 1.0), use_image_if_no_bounding_boxes=True)
    window = tf.image.resize(tf.slice(image, begin, size), tf.shape(image)[:2])
    return tf.cast(tf.round(window), image.dtype)


AUGMENTATIONS = {"shift": shifted, "crop": zoomed}


def default_augmentation(image_side: int, image_size: int) -> str:
    """"crop" for photos, held at the model's input size; "shift" for small images, which the model
    upscales (their side below image_size)."""
    return "crop" if image_side >= image_size else "shift"


def prefetched(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset with two batches prefetched and tf.data's autotuning off: its background model
    thread holds up the destruction of every iterator, so the end of each fit() or predict(), for
    seconds (bench/README.md). Parallel maps asking for AUTOTUNE then get one call per core."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def gathered(arrays: tuple[Rows, ...], indices: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Each array's rows at `indices`, taken in NumPy (a TensorFlow copy of a large feature cache
    would double its memory) or read from the files of tinynet.streaming."""
    values = tf.numpy_function(lambda i: tuple(take(a, i) for a in arrays), [indices],
                               tuple(tf.as_dtype(a.dtype) for a in arrays))
    return tuple(tf.ensure_shape(v, (None, *a.shape[1:])) for v, a in zip(values, arrays, strict=True))


def in_batches(arrays: Rows | tuple[Rows, ...], batch_size: int) -> tf.data.Dataset:
    """An array, or a tuple of them, as prefetched batches, in order: for validation and
    evaluation. Keras builds a new data adapter for NumPy arrays on every call, a cost paid at
    every epoch of a head's training."""
    parts = arrays if isinstance(arrays, tuple) else (arrays,)
    if all(isinstance(a, np.ndarray) for a in parts):
        return prefetched(tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size))
    batches = tf.data.Dataset.range(len(parts[0])).batch(batch_size).map(
        lambda i: gathered(parts, i) if isinstance(arrays, tuple) else gathered(parts, i)[0],
        num_parallel_calls=tf.data.AUTOTUNE)
    return prefetched(batches)


def sharded_in_batches(arrays: tuple[Rows, Rows], batch_size: int, shard: slice) -> tf.data.Dataset:
    """(x, y) in order as this process's slices of global batches, for validation and evaluation
    under data-parallel processes: the last batch is filled up with rows of weight 0 (every process
    must bring a slice of one size), which leave the accuracy as it is."""
    n = len(arrays[0])
    indices = tf.data.Dataset.range(-(-n // batch_size) * batch_size).batch(batch_size)

    def weighted(i):
        x, y = gathered(arrays, i % n)
        return x, y, tf.cast(i < n, tf.float32)

    return prefetched(indices.map(lambda i: weighted(i[shard.start:shard.stop]), num_parallel_calls=tf.data.AUTOTUNE))
