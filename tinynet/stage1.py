"""lilTinyNet, stage 1: an image classifier on a frozen, ImageNet-pretrained MobileNetV2.

    python lilTinyNet.py                                  # CIFAR-10 through Keras, MobileNetV2 alpha 1.0
    python lilTinyNet.py --data-dir my_photos.zip         # your own images: class folders, see --help

The base is frozen, so its output for an image never changes: one forward pass computes the
features of every image, and only the head trains, on those. Its kind fits the set's size: up to
a few thousand images, a linear layer on the globally pooled features, fitted to convergence
for several L2 penalties and the best kept on validation; on more, the blocks head, trained in
epochs of mini-batches. A folder too large for memory is streamed from its files, the features
kept in files on disk (--stream); --distribute spreads the work over processes and hosts (Keras's
JAX backend). Writes cifar10_lilTinyNet.h5 and its .json sidecar (settings, the data and its
split, history, metrics, times).

What to expect on CIFAR-10 and on photo sets, and how long it takes: README.md's results tables.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinynet import calibration, cli, runtime
from tinynet.batches import in_batches
from tinynet.data import (
    Dataset,
    Splits,
    drop_unreadable,
    load_dataset,
    one_hot,
    preprocess_data,  # noqa: F401  the original's contract: from lilTinyNet import preprocess_data
    split_data,
)
from tinynet.devices import (
    add_device_args,
    all_finish_together,
    batch_slice,
    jit_compile,
    scaled,
    set_up,
    writes_output,
)
from tinynet.errors import UserError
from tinynet.features import PASS_BATCH_SIZE, extract_features, features_of_all, stream_features
from tinynet.images import SQUARE_METHODS
from tinynet.linear_head import FOLDS, MAX_IMAGES, PENALTIES, cross_validated_accuracy, fit_linear_head
from tinynet.model import (
    HEADS,
    MIN_IMAGE_SIZE,
    build_model,
    check_base_settings,
    check_cached_head_matches,
    count_weights,
    feature_extractor,
    with_classifier,
)
from tinynet.optimizers import compile_model, cosine_schedule
from tinynet.runfiles import check_free_space, finish, space_needed
from tinynet.streaming import FeatureFile, take
from tinynet.training import (
    HEAD_STEPS_PER_CALL,
    epoch_steps,
    evaluate_splits,
    report_divergence,
    split_probabilities,
    steps_per_call,
    timed,
    train,
)

if TYPE_CHECKING:  # for the type hints only: tinynet imports TensorFlow first, quietly
    import keras

EPOCHS = 10  # the head's default epochs on a large set such as CIFAR-10
MIN_HEAD_STEPS = 1000  # on fewer images, more epochs: a head needs about this many steps (bench_own_data)
HEAD_ALIASES = {"gap": "linear"}  # the linear head's earlier name, still accepted
CHECK_IMAGES = 8  # called eagerly, the model holds all their activations at once: 32 took 0.9 GB at alpha 1.0


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    cli.add_data_args(parser)
    group = parser.add_argument_group("model")
    group.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    group.add_argument("--weights", default="imagenet",
                       help="'imagenet', 'none' (random, for tests) or a path to a weights file")
    group.add_argument("--image-size", type=cli.positive_int, default=None,
                       help="images are resized to this inside the model; default: 4x small images "
                            "(CIFAR-10's 32 to 128) and at least 96, photos at MobileNetV2's native 224")
    group.add_argument("--square", choices=SQUARE_METHODS, default="crop",
                       help="how a photo that is not square becomes square: its centre square, padded "
                            "with grey, or stretched")
    group.add_argument("--head", choices=("auto", *HEADS), default="auto",
                       type=lambda name: HEAD_ALIASES.get(name, name),
                       help=f"auto: linear up to {MAX_IMAGES} training images, else blocks. blocks: blocks 13 and "
                            "16, 2x2-pooled, + Dense(512); linear: global pool + linear layer, its L2 penalty "
                            "chosen on validation; original: Flatten + Dense(1024)")
    group.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                       help="run the frozen base on every image in every epoch, as the original did")
    group.add_argument("--cache-dir", default=None,
                       help="where streamed images' features are written (default: <output>.features/ beside "
                            "the model); removed at the end")
    group.add_argument("--keep-cache", action="store_true", help="keep the streamed features' files")
    runtime.add_runtime_arg(group)
    cli.add_training_args(
        parser, "training (blocks and original heads)",
        epochs=f"{EPOCHS}, more on a small set so that the head trains at least {MIN_HEAD_STEPS} steps",
        batch_size=256, batch_help="cached features (or images, with --no-feature-cache) per training step",
        learning_rate=2e-3, rate_help="Adam's initial rate, decayed along a cosine to 0 over --epochs",
        patience="3, or a third of --epochs when that is more")
    cli.add_output_args(parser, "cifar10_lilTinyNet.h5")
    add_device_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    weights = None if args.weights == "none" else args.weights
    check_base_settings(args.alpha, weights, args.image_size or MIN_IMAGE_SIZE)
    cli.check_output(args.output)
    strategy = set_up(args, args.seed)
    batch_size, learning_rate = scaled(strategy, args.batch_size, args.learning_rate)
    shard = batch_slice(strategy, batch_size)  # under --distribute: this process's part of each batch
    times: dict[str, float] = {}
    started = time.perf_counter()

    # Data: uint8 images, photos made square at the model's size; validation (and test, if the
    # layout has none) carved from the training images, so the test set is touched once, at the end.
    with timed(times, "load_data"):
        data = load_dataset(args.data_dir, args.image_size, args.square, args.stream)
    splits = split_data(data, args.val_split, args.test_split, args.seed)
    if data.streamed and shard:
        raise UserError("--distribute holds the images in memory: it does not stream a folder this large yet")
    counts = {split: len(y) for split, y in splits.labels.items()}
    print(f"data: {counts['train']} train, {counts['val']} validation, {counts['test']} test images, "
          f"{data.num_classes} classes, from {data.source}: {data.layout}; model input {data.image_size} px")

    # Model: scale and resize inside, the frozen MobileNetV2, then the head, chosen by the set's size.
    head = args.head if args.head != "auto" else "linear" if counts["train"] <= MAX_IMAGES else "blocks"
    linear = head == "linear" and args.feature_cache and not shard  # the closed-form fit is for one process
    with strategy.scope():
        model = build_model(data.num_classes, data.image_size, args.alpha, weights, head, args.square)
    check_free_space(args.output, space_needed(model))
    trainable, frozen = count_weights(model)
    print(f"model: {model.name}, {trainable:,} trainable and {frozen:,} frozen parameters")

    extra_runtime: dict[str, str] = {}
    # What trains: with the feature cache, the classifier alone on features computed once;
    # without it, the whole model on images, every epoch going through the base again.
    if args.feature_cache:
        with timed(times, "features"):
            with strategy.scope():
                extractor = feature_extractor(model)
            pass_batch_size = PASS_BATCH_SIZE * strategy.num_replicas_in_sync
            cache = Path(args.cache_dir or Path(args.output).with_suffix(".features"))
            if shard:  # each process computes its share, and all get every feature
                print("features: one forward pass of the frozen base over every image, shared by the processes")
                inputs = features_of_all(extractor, splits.images, PASS_BATCH_SIZE, strategy)
            else:  # on LiteRT where it is faster and gives the same features (tinynet.runtime)
                probe = take(splits.images["train"], np.arange(min(pass_batch_size, counts["train"])))
                forward = runtime.runner(extractor, probe, sum(counts.values()), args.runtime)
                extra_runtime = {"runtime": forward.name}
                print(f"features: one forward pass of the frozen base over every image, on {forward.name}")
                if data.streamed:  # features into files; images that cannot be read are left out
                    inputs, splits = features_in_files(extractor, data, splits, pass_batch_size, cache, forward)
                else:
                    inputs = {split: extract_features(extractor, x, pass_batch_size, call=forward)
                              for split, x in splits.images.items()}
        net = model.get_layer("classifier")
    else:
        inputs, net = splits.images, model
    images = splits.images
    labels = {split: one_hot(y, data.num_classes) for split, y in splits.labels.items()}

    # Train: on a small set, a linear layer fitted to convergence per L2 penalty, the best kept;
    # on a large one, Adam with a cosine decay and early stopping on validation accuracy.
    if linear:
        with timed(times, "train"), strategy.scope():
            in_memory = {split: x[:] for split, x in inputs.items()}  # the fit takes every row at once
            net, rows, extra = train_linear_head(in_memory, labels, data.num_classes, args.seed)
        model = with_classifier(extractor, net, head)
    else:
        with timed(times, "train"):
            rows, extra = train_in_epochs(net, inputs, labels, args, batch_size, learning_rate, shard,
                                          writes_output(strategy))
    extra["head"] = head
    extra.update(extra_runtime)

    # Evaluate the best weights on validation, and once on test; fit the temperature that makes its
    # probabilities honest on validation (tinynet.calibration).
    with timed(times, "evaluate"):
        metrics = evaluate_splits(net, inputs, labels, batch_size, shard)
        extra["calibration"] = calibration.fit(split_probabilities(net, inputs["val"], batch_size, shard),
                                               splits.labels["val"])
        if args.feature_cache and not shard:
            first = np.arange(min(CHECK_IMAGES, len(labels["test"])))
            check_cached_head_matches(model, net, take(images["test"], first), take(inputs["test"], first))

    # Save the full model, compiled for evaluate(), and beside it what made it (one process writes).
    info = {"metrics": metrics}
    with all_finish_together(strategy, model):
        if writes_output(strategy):
            info = finish(model, "base", args, learning_rate=learning_rate, data=data, splits=splits, seed=args.seed,
                          history=rows, metrics=metrics, times=times, started=started, **extra)
            print(f"\ntest accuracy {metrics['test']['accuracy']:.4f} (validation {metrics['val']['accuracy']:.4f}) "
                  f"in {times['total']:.0f} s")
    if data.streamed and args.feature_cache and not args.keep_cache:
        shutil.rmtree(cache)
    return info


def features_in_files(extractor: keras.Model, data: Dataset, splits: Splits, batch_size: int, cache: Path,
                      forward: runtime.Runner) -> tuple[dict[str, FeatureFile], Splits]:
    """The forward pass over streamed images, each split's features into a file in `cache`;
    returns the files and the splits without the images that could not be read."""
    print(f"features: streamed into {cache}/")
    passes = {split: stream_features(extractor, images, batch_size, cache / f"{split}.f32", forward)
              for split, images in splits.images.items()}
    splits = drop_unreadable(data, splits, {split: readable for split, (_, readable) in passes.items()})
    return {split: features for split, (features, _) in passes.items()}, splits


def train_linear_head(inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int,
                      seed: int) -> tuple[keras.Model, list[dict], dict]:
    """The linear head of tinynet.linear_head; returns it, a row per penalty, and the one kept."""
    print(f"head: linear, fitted on all {len(labels['train'])} training images at once for each of "
          f"{len(PENALTIES)} L2 penalties")
    net, rows, kept = fit_linear_head(inputs, labels, num_classes, seed)
    print(f"penalty {kept['penalty']} kept, the strongest within one standard error (or one image's worth) of "
          f"the lowest validation loss: loss {kept['val_loss']:.3f}, accuracy {kept['val_accuracy']:.4f}")
    crossed = cross_validated_accuracy(inputs, labels, num_classes, kept["penalty"], seed)
    print(f"cross-validated on all {len(labels['train']) + len(labels['val'])} training and validation images "
          f"({FOLDS} folds): accuracy {crossed:.4f}")
    return net, rows, {"penalty": kept["penalty"], "cross_validated_accuracy": round(crossed, 4)}


def train_in_epochs(net: keras.Model, inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], args,
                    batch_size: int, learning_rate: float, shard: slice | None, writes: bool
                    ) -> tuple[list[dict], dict]:
    """Mini-batch epochs, at least MIN_HEAD_STEPS steps in all; returns the per-epoch history and
    the best epoch."""
    steps_per_epoch = epoch_steps(len(inputs["train"]), batch_size, shard)
    epochs = args.epochs or max(EPOCHS, math.ceil(MIN_HEAD_STEPS / steps_per_epoch))
    patience = args.patience or max(3, epochs // 3)
    print(f"head: up to {epochs} epochs of {steps_per_epoch} steps, patience {patience}")
    calls = steps_per_call(steps_per_epoch, HEAD_STEPS_PER_CALL) if args.feature_cache else 1
    compile_model(net, cosine_schedule(learning_rate, epochs * steps_per_epoch), calls, jit_compile(args.jit))
    # Near ln(classes) if the head starts at chance. In batches like fit()'s validation, so that
    # both run one traced graph.
    first_loss = net.evaluate(in_batches((inputs["val"][:512], labels["val"][:512]), batch_size), verbose=0)[0]
    classes = labels["val"].shape[1]
    print(f"initial validation loss {first_loss:.3f} (chance: ln({classes}) = {math.log(classes):.3f})")
    run = train(net, inputs, labels, epochs=epochs, batch_size=batch_size, seed=args.seed,
                output=args.output, resume=args.resume, log_dir=args.log_dir, patience=patience, shard=shard,
                writes=writes)
    report_divergence(run)
    return run.rows, {"best_epoch": run.best_epoch}
