"""lilTinyNet, stage 1: a CIFAR-10 classifier on a frozen, ImageNet-pretrained MobileNetV2.

    python lilTinyNet.py                      # Keras CIFAR-10 download, MobileNetV2 alpha 1.0
    python lilTinyNet.py --data-dir ../shared/data/cifar10-jpg-q75.tar.gz --alpha 0.35 \\
        --weights ../shared/keras/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5

The base is frozen, so its output for an image never changes: one forward pass computes the
features of every image, and the head trains on those for as many epochs as it needs.
Writes cifar10_lilTinyNet.h5 and cifar10_lilTinyNet.json (settings, history, metrics, times).
Measured results (test accuracy, wall time) are in README.md.
"""

from __future__ import annotations

import math
import time

from tinynet import cli  # first: it quiets TensorFlow's C++ start-up logs

# isort: split
import keras
import numpy as np
import tensorflow as tf

from tinynet.data import load_dataset, split_validation
from tinynet.model import HEADS, build_model, compile_model, count_weights, feature_extractor
from tinynet.training import (
    extract_features,
    history_rows,
    one_hot,
    save_model,
    state_dir,
    timed,
    training_callbacks,
)

HEAD_STEPS_PER_CALL = 64  # a step of the head alone takes microseconds: run up to 64 per call


def preprocess_data(X: np.ndarray, Y: np.ndarray, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The original's helper: (m, 32, 32, 3) uint8 images and (m,) or (m, 1) labels to what
    the saved model's evaluate() takes. The model resizes and scales images itself, so X only
    becomes a uint8 array; Y becomes one-hot."""
    return np.asarray(X, dtype=np.uint8), one_hot(Y, num_classes)


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    cli.add_data_args(parser)
    group = parser.add_argument_group("model")
    group.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    group.add_argument("--weights", default="imagenet",
                       help="'imagenet', 'none' (random, for tests) or a path to a weights file")
    group.add_argument("--image-size", type=cli.positive_int, default=128,
                       help="images are resized to this inside the model (CIFAR-10 is 32)")
    group.add_argument("--head", choices=HEADS, default="pooled",
                       help="pooled: 2x2 pool + Dense(256); gap: global pool + linear; original: Flatten + Dense(1024)")
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=cli.positive_int, default=10, help="at most; early stopping may end sooner")
    group.add_argument("--batch-size", type=cli.positive_int, default=128)
    group.add_argument("--learning-rate", type=cli.positive_float, default=1e-3,
                       help="Adam's initial rate, decayed along a cosine to 0 over --epochs")
    group.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                       help="run the frozen base on every image in every epoch, as the original did")
    group = parser.add_argument_group("output")
    group.add_argument("--output", default="cifar10_lilTinyNet.h5",
                       help="the trained model; its .json sidecar goes beside it")
    group.add_argument("--log-dir", default=None, help="write TensorBoard logs and epochs.csv here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    times: dict[str, float] = {}
    started = time.perf_counter()

    # Data: uint8 images at their stored size; validation is carved from the training set,
    # so the test set is touched once, for the final report.
    with timed(times, "load_data"):
        data = load_dataset(args.data_dir, args.image_size)
    train_idx, val_idx = split_validation(data.y_train, args.val_split, args.seed)
    labels = {split: one_hot(y, data.num_classes) for split, y in
              {"train": data.y_train[train_idx], "val": data.y_train[val_idx], "test": data.y_test}.items()}
    print(f"data: {len(train_idx)} train, {len(val_idx)} validation, {len(data.y_test)} test images "
          f"of {data.x_train.shape[1:]}, {data.num_classes} classes, from {data.source}")

    # Model: resize and scale inside, the frozen MobileNetV2, then the head.
    weights = None if args.weights == "none" else args.weights
    model = build_model(data.num_classes, args.image_size, args.alpha, weights, args.head)
    trainable, frozen = count_weights(model)
    print(f"model: {model.name}, {trainable:,} trainable and {frozen:,} frozen parameters")

    # What trains: with the feature cache, the classifier alone on features computed once;
    # without it, the whole model on images, every epoch going through the base again.
    if args.feature_cache:
        print("features: one forward pass of the frozen base over every image")
        with timed(times, "features"):
            extractor = feature_extractor(model)
            all_train = extract_features(extractor, data.x_train, args.batch_size)
            inputs = {"train": all_train[train_idx], "val": all_train[val_idx],
                      "test": extract_features(extractor, data.x_test, args.batch_size)}
            del all_train
        net = model.get_layer("classifier")
    else:
        inputs = {"train": data.x_train[train_idx], "val": data.x_train[val_idx], "test": data.x_test}
        net = model

    # Train: Adam with a cosine decay, early stopping on validation accuracy, best weights kept.
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=args.epochs * steps_per_epoch)
    steps_per_call = min(HEAD_STEPS_PER_CALL, steps_per_epoch) if args.feature_cache else 1
    compile_model(net, schedule, steps_per_execution=steps_per_call)
    first_loss = net.evaluate(inputs["val"][:512], labels["val"][:512], verbose=0)[0]
    chance = math.log(data.num_classes)
    print(f"initial validation loss {first_loss:.3f} (chance: ln({data.num_classes}) = {chance:.3f})")
    with timed(times, "train"):
        history = net.fit(inputs["train"], labels["train"], batch_size=args.batch_size, epochs=args.epochs,
                          validation_data=(inputs["val"], labels["val"]),
                          callbacks=training_callbacks(state_dir(args.output), args.log_dir))

    # Evaluate the best weights on validation, and once on test.
    with timed(times, "evaluate"):
        metrics = {split: net.evaluate(inputs[split], labels[split], batch_size=args.batch_size,
                                       verbose=0, return_dict=True) for split in ("val", "test")}
    if args.feature_cache:
        check_cached_head_matches(model, net, data.x_test[:32], inputs["test"][:32])

    # Save the full model, compiled for evaluate(), with its sidecar.
    with timed(times, "save"):
        compile_model(model, args.learning_rate)
        info = {
            "stage": "base",
            "settings": vars(args),
            "class_names": data.class_names,
            "data": {"source": data.source, "train": len(train_idx), "val": len(val_idx), "test": len(data.y_test)},
            "history": history_rows(history),
            "metrics": {split: {k: float(v) for k, v in m.items()} for split, m in metrics.items()},
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        }
        times["total"] = round(time.perf_counter() - started, 2)
        save_model(model, args.output, {**info, "times": times})

    print(f"\ntest accuracy {metrics['test']['accuracy']:.4f} (validation {metrics['val']['accuracy']:.4f}) "
          f"after {len(history.epoch)} epochs in {times['total']:.0f} s")
    print(f"saved {args.output} and its sidecar {args.output.rsplit('.', 1)[0]}.json")
    return info


def check_cached_head_matches(model: keras.Model, classifier: keras.Model, images: np.ndarray,
                              features: np.ndarray) -> None:
    """The assembled model must predict what the head predicted from the cached features."""
    from_images = model.predict(images, verbose=0)
    from_features = classifier.predict(features, verbose=0)
    if not (np.array_equal(from_images.argmax(1), from_features.argmax(1))
            and np.allclose(from_images, from_features, atol=1e-5)):
        raise RuntimeError("the assembled model disagrees with the head trained on cached features")


if __name__ == "__main__":
    cli.run(main)
