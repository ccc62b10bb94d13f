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

from tinynet.data import load_dataset
from tinynet.devices import add_device_args, jit_compile, set_up
from tinynet.model import HEADS, build_model, check_base_settings, compile_model, count_weights, feature_extractor
from tinynet.training import (
    check_free_space,
    cosine_schedule,
    evaluate_splits,
    extract_features,
    in_batches,
    one_hot,
    report_divergence,
    run_info,
    save_model,
    sidecar_path,
    space_needed,
    split_data,
    steps_per_call,
    timed,
    train,
    write_sidecar,
)

HEAD_STEPS_PER_CALL = 64  # a step of the head alone takes milliseconds: run up to 64 per call
PASS_BATCH_SIZE = 128  # images per step of the forward pass: 256 was 3% slower here and took 440 MB more
CHECK_IMAGES = 8  # called eagerly, the model holds all their activations at once: 32 took 0.9 GB at alpha 1.0


def preprocess_data(X: np.ndarray, Y: np.ndarray, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The original's helper: (m, 32, 32, 3) uint8 images and (m,) or (m, 1) labels to what
    the saved model's evaluate() takes. The model scales and resizes images itself, so X only
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
    group.add_argument("--head", choices=HEADS, default="blocks",
                       help="blocks: blocks 13 and 16, 2x2-pooled, + Dense(512); gap: global pool + linear; "
                            "original: Flatten + Dense(1024)")
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=cli.positive_int, default=10, help="at most; early stopping may end sooner")
    group.add_argument("--batch-size", type=cli.positive_int, default=256,
                       help="cached features (or images, with --no-feature-cache) per training step")
    group.add_argument("--learning-rate", type=cli.positive_float, default=2e-3,
                       help="Adam's initial rate, decayed along a cosine to 0 over --epochs")
    group.add_argument("--patience", type=cli.positive_int, default=3,
                       help="stop after this many epochs without a better validation accuracy")
    group.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                       help="run the frozen base on every image in every epoch, as the original did")
    group = parser.add_argument_group("output")
    group.add_argument("--output", default="cifar10_lilTinyNet.h5",
                       help="the trained model; its .json sidecar goes beside it")
    cli.add_run_args(group)
    add_device_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    weights = None if args.weights == "none" else args.weights
    check_base_settings(args.alpha, weights, args.image_size)
    cli.check_output(args.output)
    strategy, batch_size, learning_rate = set_up(args)
    times: dict[str, float] = {}
    started = time.perf_counter()

    # Data: uint8 images at their stored size; validation is carved from the training set,
    # so the test set is touched once, for the final report.
    with timed(times, "load_data"):
        data = load_dataset(args.data_dir, args.image_size)
    splits = split_data(data, args.val_split, args.seed)
    images = {split: x for split, (x, _) in splits.items()}
    labels = {split: y for split, (_, y) in splits.items()}
    print(f"data: {len(images['train'])} train, {len(images['val'])} validation, {len(images['test'])} test "
          f"images of {data.x_train.shape[1:]}, {data.num_classes} classes, from {data.source}")

    # Model: scale and resize inside, the frozen MobileNetV2, then the head.
    with strategy.scope():
        model = build_model(data.num_classes, args.image_size, args.alpha, weights, args.head)
    check_free_space(args.output, space_needed(model))
    trainable, frozen = count_weights(model)
    print(f"model: {model.name}, {trainable:,} trainable and {frozen:,} frozen parameters")

    # What trains: with the feature cache, the classifier alone on features computed once;
    # without it, the whole model on images, every epoch going through the base again.
    if args.feature_cache:
        print("features: one forward pass of the frozen base over every image")
        with timed(times, "features"):
            with strategy.scope():
                extractor = feature_extractor(model)
            pass_batch_size = PASS_BATCH_SIZE * strategy.num_replicas_in_sync
            inputs = {split: extract_features(extractor, x, pass_batch_size) for split, x in images.items()}
        net = model.get_layer("classifier")
    else:
        inputs, net = images, model

    # Train: Adam with a cosine decay, early stopping on validation accuracy, best weights kept.
    steps_per_epoch = math.ceil(len(inputs["train"]) / batch_size)
    calls = steps_per_call(steps_per_epoch, HEAD_STEPS_PER_CALL) if args.feature_cache else 1
    compile_model(net, cosine_schedule(learning_rate, args.epochs * steps_per_epoch), calls,
                  jit_compile(args.jit))
    # Near ln(classes) if the head starts at chance. In batches like fit()'s validation, so that
    # both run one traced graph (from NumPy arrays, evaluate() traced another: 0.7 s).
    first_loss = net.evaluate(in_batches((inputs["val"][:512], labels["val"][:512]), batch_size), verbose=0)[0]
    chance = math.log(data.num_classes)
    print(f"initial validation loss {first_loss:.3f} (chance: ln({data.num_classes}) = {chance:.3f})")
    with timed(times, "train"):
        run = train(net, inputs, labels, epochs=args.epochs, batch_size=batch_size, seed=args.seed,
                    output=args.output, resume=args.resume, log_dir=args.log_dir, patience=args.patience)
    report_divergence(run)

    # Evaluate the best weights on validation, and once on test.
    with timed(times, "evaluate"):
        metrics = evaluate_splits(net, inputs, labels, batch_size)
        if args.feature_cache:
            check_cached_head_matches(model, net, images["test"][:CHECK_IMAGES], inputs["test"][:CHECK_IMAGES])

    # Save the full model, compiled for evaluate(), and beside it what made it.
    compile_model(model, learning_rate, for_saving=True)
    with timed(times, "save"):
        save_model(model, args.output)
    times["total"] = round(time.perf_counter() - started, 2)
    info = run_info("base", args, data, splits, run.rows, metrics, times, best_epoch=run.best_epoch)
    write_sidecar(args.output, info)

    print(f"\ntest accuracy {metrics['test']['accuracy']:.4f} (validation {metrics['val']['accuracy']:.4f}) "
          f"after {len(run.rows)} epochs (best: {run.best_epoch}) in {times['total']:.0f} s")
    print(f"saved {args.output} and its sidecar {sidecar_path(args.output)}")
    return info


def check_cached_head_matches(model: keras.Model, classifier: keras.Model, images: np.ndarray,
                              features: np.ndarray) -> None:
    """The assembled model must predict what the head predicted from the cached features.

    Called, not predict()ed: tracing the whole model to run it once took 1 to 2 s. Called eagerly,
    the base rounds differently from the pass's graph (probabilities up to 8e-6 apart), hence
    a tolerance of 1e-4: a wrongly assembled model misses it by orders of magnitude."""
    from_images = keras.ops.convert_to_numpy(model(images, training=False))
    from_features = keras.ops.convert_to_numpy(classifier(features, training=False))
    if not (np.array_equal(from_images.argmax(1), from_features.argmax(1))
            and np.allclose(from_images, from_features, atol=1e-4)):
        raise RuntimeError("the assembled model disagrees with the head trained on cached features")


if __name__ == "__main__":
    cli.run(main)
