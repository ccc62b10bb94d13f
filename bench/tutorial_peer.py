"""The peer: TensorFlow's transfer-learning tutorial (MobileNetV2, "Transfer learning and fine-tuning")
as users copy it, made multi-class, on the kit's own split of a set and the same weights.

Its whole recipe: images resized (stretched) to 160 pixels, flipped and rotated by up to 20% of a
turn, scaled to [-1, 1], the frozen base called with training=False, global average pooling,
dropout 0.2 and a dense layer of logits; Adam at 1e-4 for 10 epochs of batch 32, then the base's
layers from index 100 up unfrozen and RMSprop at 1e-5 for 10 more. The model of the last epoch is
the result: the tutorial watches validation but chooses nothing by it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

SIZE = 160
EPOCHS = 10  # each phase
FINE_TUNE_AT = 100  # the tutorial's layer index


def tutorial(sidecar: str, alpha: float, weights: str, seed: int) -> dict:
    """The tutorial's test accuracy on the split of the kit's run whose sidecar this is."""
    import keras
    import numpy as np

    from tinynet.data import load_recorded

    start = time.perf_counter()
    record = {**json.loads(Path(sidecar).read_text())["data"], "image_size": SIZE, "square": "stretch"}
    data, splits = load_recorded(record)
    x, y = splits.images, {split: np.asarray(labels).reshape(-1) for split, labels in splits.labels.items()}
    keras.utils.set_random_seed(seed)

    base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=alpha, include_top=False,
                                          weights=weights)
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    augmented = keras.layers.RandomRotation(0.2)(keras.layers.RandomFlip("horizontal")(inputs))
    features = base(keras.layers.Rescaling(1 / 127.5, offset=-1)(augmented), training=False)
    pooled = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, keras.layers.Dense(data.num_classes)(pooled))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def fit(optimizer, initial_epoch: int) -> None:
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
        model.fit(x["train"].astype("float32"), y["train"], batch_size=32, epochs=initial_epoch + EPOCHS,
                  initial_epoch=initial_epoch, validation_data=(x["val"].astype("float32"), y["val"]), verbose=0)

    fit(keras.optimizers.Adam(1e-4), 0)
    base.trainable = True
    for layer in base.layers[:FINE_TUNE_AT]:
        layer.trainable = False
    fit(keras.optimizers.RMSprop(1e-5), EPOCHS)
    scores = {split: model.evaluate(x[split].astype("float32"), y[split], batch_size=64, verbose=0, return_dict=True)
              for split in ("val", "test")}
    return {"test_accuracy": round(scores["test"]["accuracy"], 4), "val_accuracy": round(scores["val"]["accuracy"], 4),
            "seconds": round(time.perf_counter() - start, 1)}
