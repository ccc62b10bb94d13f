"""Batches as tf.data pipelines: shuffled and augmented training epochs, and arrays in order for
validation, evaluation and prediction."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def epoch_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first_epoch: int, epochs: int,
                  augment: bool = False) -> tf.data.Dataset:
    """Training batches for epochs first_epoch .. epochs-1, in one stream.

    Epoch e's order, and each image's augmentation, depend only on (seed, e): a resumed run sees
    exactly the batches an uninterrupted one would. Augmentation flips and shifts each image by up
    to 1/8 of its size (a random crop of the zero-padded image); images stay uint8 throughout.
    """
    n = len(x)

    def gather(indices):  # in NumPy: a TensorFlow copy of a large feature cache would double its memory
        return x[indices], y[indices]

    def batch_of(indices):
        images, labels = tf.numpy_function(gather, [indices], (x.dtype, y.dtype))
        return tf.ensure_shape(images, (None, *x.shape[1:])), tf.ensure_shape(labels, (None, *y.shape[1:]))

    def augmented(images, labels, epoch_seed, indices):
        height, width, channels = x.shape[1:]
        pad_h, pad_w = height // 8, width // 8

        def one(args):
            image, index = args
            flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(epoch_seed + [0, index], 2))
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            image = tf.image.pad_to_bounding_box(image, pad_h, pad_w, height + 2 * pad_h, width + 2 * pad_w)
            return tf.image.stateless_random_crop(image, (height, width, channels), crop_seed)

        return tf.map_fn(one, (images, indices), fn_output_signature=images.dtype), labels

    def one_epoch(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch * n])
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), epoch_seed)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        if augment:
            return batches.map(lambda i: (*batch_of(i), i)).map(
                lambda images, labels, i: augmented(images, labels, epoch_seed, i), num_parallel_calls=tf.data.AUTOTUNE)
        return batches.map(batch_of)

    return prefetched(tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch))


def prefetched(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset with two batches prefetched and tf.data's autotuning off: its background model
    thread holds up the destruction of every iterator, so the end of each fit() or predict(), for
    seconds (bench/README.md). Parallel maps asking for AUTOTUNE then get one call per core."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def in_batches(arrays: np.ndarray | tuple[np.ndarray, ...], batch_size: int) -> tf.data.Dataset:
    """An array, or a tuple of them, in memory as prefetched batches, in order: for validation and
    evaluation. Keras builds a new data adapter for NumPy arrays on every call, which cost 0.1 s per
    epoch of a head's training."""
    return prefetched(tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size))
