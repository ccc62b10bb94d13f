"""lilTinyNet, stage 2: fine-tune the base model on augmented images with the top of MobileNetV2 unfrozen.

    python lilTinyNet.py && python lilTinyNet_finetuner.py

Reads cifar10_lilTinyNet.h5 and its sidecar (the same data, image size and split, no flags to
repeat), unfreezes MobileNetV2 from --unfreeze up, keeps every BatchNormalization frozen, and
trains at a low rate, warmed up and decayed along a cosine, on images flipped and then zoomed
into (photos) or shifted (small images); batch and epochs are sized so that a small set still
gets a few hundred steps. The output is the average of the weights of the schedule's last
quarter, or the base model itself, not fine-tuned, where fine-tuning is not worth it: when stage 1
already classifies nearly every image right (cross-validated), and when after a fifth of the
epochs fine-tuning is still below the base on validation by more than chance.
Streams the images from their files when stage 1 did; --distribute as stage 1.
Writes cifar10_finetuned_lilTinyNet.h5 and its .json sidecar.

What to expect on CIFAR-10 and on photo sets, and how long it takes: README.md's results tables.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import keras
import numpy as np

from tinynet import calibration, cli
from tinynet.batches import AUGMENTATIONS, default_augmentation
from tinynet.data import load_recorded_data, one_hot, split_recorded
from tinynet.devices import (
    add_device_args,
    all_finish_together,
    batch_slice,
    jit_compile,
    scaled,
    set_up,
    writes_output,
)
from tinynet.model import check_num_classes, count_weights, first_trainable_layer, load_saved_model, unfreeze
from tinynet.optimizers import compile_model, cosine_schedule, depth_rates
from tinynet.runfiles import check_free_space, finish, read_sidecar, space_needed
from tinynet.streaming import take
from tinynet.training import epoch_steps, evaluate_splits, report_divergence, split_probabilities, timed, train

EPOCHS = 30  # on a large set such as CIFAR-10
MIN_STEPS = 300  # on a small one, more epochs: fine-tuning needs a few hundred steps to move the features
BATCH_SIZE = 128
MIN_BATCH = 16  # below this, the noise of the gradient outweighs the extra steps
PEAK_RATE, REFERENCE_ALPHA = 3e-4, 0.35  # Adam moves every weight by about the rate: a wider base needs a lower one
AVERAGED_SHARE = 4  # the last quarter of the schedule, at low rates, is averaged: steadier than any one epoch
GIVE_UP_AT = 0.2  # of the epochs: with the first epoch's tracing, a fifth of the epochs is under a third of the time
SKIP_FROM = 0.95  # stage 1's cross-validated accuracy from which fine-tuning loses about as often as it gains
GIVE_UP_Z = 2.0  # standard errors of the validation accuracy's difference that count as "below the base"


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    group = parser.add_argument_group("base model")
    group.add_argument("--base", default="cifar10_lilTinyNet.h5", help="the model lilTinyNet.py trained")
    cli.add_data_args(parser, from_base=True)
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--unfreeze", default="block_3",
                       help="train MobileNetV2 from this block up: a block (block_1 .. block_16, or its number), "
                            "Conv_1 (the last conv only; --head gap or original) or all")
    group.add_argument("--layer-decay", type=float, default=1.0,
                       help="each block below the top trains at this fraction of the rate of the block above it "
                            "(1: one rate for all)")
    group.add_argument("--label-smoothing", type=float, default=0.0, metavar="SHARE",
                       help="train on targets with this share of each label spread evenly over the classes")
    group.add_argument("--l2-sp", type=float, default=0.0, metavar="STRENGTH",
                       help="pull every weight back toward its starting value: each step moves it this times the "
                            "rate of the way back (L2-SP; 0: off)")
    group.add_argument("--keep", choices=("average", "best"), default="average",
                       help="what stage 2 returns: average, the mean of the weights of the schedule's last quarter "
                            "(its low-rate epochs); best, the epoch best on validation, the base included")
    group.add_argument("--skip-from", type=float, default=SKIP_FROM, metavar="ACCURACY",
                       help="return the base model, not fine-tuned, when stage 1's cross-validated accuracy is at "
                            "least this: too little is left to gain (above 1: always fine-tune)")
    group.add_argument("--give-up", action=argparse.BooleanOptionalAction, default=True,
                       help="after a fifth of the epochs, stop and return the base model if fine-tuning is below it "
                            "on validation by more than the validation set's size can put down to chance "
                            "(--no-give-up: the whole schedule, and --skip-from is not applied)")
    group.add_argument("--augment", choices=("auto", *AUGMENTATIONS), default="auto",
                       help="flip each training image, then shift it (by up to 1/8 of its size) or crop it (zoom "
                            "into a random window of 1/4 to all of its area); auto: crop photos, shift small images "
                            "that the model upscales")
    cli.add_training_args(
        parser, "training",
        epochs=f"{EPOCHS}, more on a small set so that training takes at least {MIN_STEPS} steps",
        batch_size=None, batch_help=f"default {BATCH_SIZE}, smaller on a small set (an eighth of it, at least "
                                    f"{MIN_BATCH})",
        learning_rate=None, rate_help=f"peak Adam rate, reached after a warm-up of one epoch (at least 1/30 of "
                                      f"training), then decayed along a cosine to 0; default {PEAK_RATE:g} at alpha "
                                      f"{REFERENCE_ALPHA}, and inversely proportional to the base's width",
        patience="none, the whole schedule: its last, low-rate epochs gain the most")
    cli.add_output_args(parser, "cifar10_finetuned_lilTinyNet.h5")
    add_device_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, on_epoch: Callable[[int, keras.Model], None] | None = None) -> dict:
    """Stage 2 as the script runs it; on_epoch(epoch, model) sees the weights at each epoch's end."""
    args = parse_args(argv)
    base_info = read_sidecar(args.base)
    record = base_info.get("data", {})
    seed = record.get("seed", 0)  # the split, shuffling and augmentation seeded as the base run was
    from_layer = first_trainable_layer(args.unfreeze)
    cli.check_output(args.output)
    strategy = set_up(args, seed)
    times: dict[str, float] = {}
    started = time.perf_counter()

    # The base model as lilTinyNet.py saved it, and the same data and split.
    with strategy.scope():
        model = load_saved_model(args.base)
    with timed(times, "load_data"):
        data = load_recorded_data(record, args.data_dir)
    check_num_classes(model, data.num_classes, args.base)
    splits = split_recorded(data, record)
    check_free_space(args.output, space_needed(model))
    images = splits.images
    labels = {split: one_hot(y, data.num_classes) for split, y in splits.labels.items()}
    augment = args.augment
    if augment == "auto":  # photos are held at the model's input size, small images below it
        augment = default_augmentation(take(images["train"], np.arange(1)).shape[1], data.image_size)
    print(f"data: {len(images['train'])} train (augmented: flip and {augment}), {len(images['val'])} validation, "
          f"{len(images['test'])} test images from {data.source}")

    # Batches, epochs and warm-up sized to the set: a small one still gets a few hundred steps.
    # Over several devices, the batch and rate scale with them (tinynet.devices.scaled).
    batch_size = args.batch_size or int(np.clip(len(images["train"]) // 8, MIN_BATCH, BATCH_SIZE))
    alpha = base_info.get("settings", {}).get("alpha", 1.0)
    batch_size, learning_rate = scaled(strategy, batch_size, args.learning_rate or PEAK_RATE * REFERENCE_ALPHA / alpha)
    shard = batch_slice(strategy, batch_size)  # under --distribute: this process's part of each batch
    steps_per_epoch = epoch_steps(len(images["train"]), batch_size, shard)
    epochs = args.epochs or max(EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))
    patience = args.patience or epochs
    total_steps = epochs * steps_per_epoch
    warmup = max(steps_per_epoch, total_steps // 30)

    # Epoch 0 is the base itself. After a fifth of the epochs, fine-tuning gives up if no epoch
    # came within chance of the base on validation; else the average of its last quarter is
    # returned (--keep best: the best epoch, the base included).
    base_val = evaluate_splits(model, images, labels, batch_size, shard, splits=("val",))["val"]
    average_last = max(2, epochs // AVERAGED_SHARE) if args.keep == "average" else 0
    give_up = (give_up_epoch(epochs), chance_margin(base_val["accuracy"], len(labels["val"])))

    # Stage 1 already right on nearly every image, cross-validated (tinynet.linear_head): too
    # little is left to gain for fine-tuning on a few hundred images to pay, so the base is returned.
    crossed = base_info.get("cross_validated_accuracy")
    if args.give_up and crossed is not None and crossed >= args.skip_from:
        print(f"stage 1 already classifies {crossed:.1%} of the training and validation images right "
              f"(cross-validated): fine-tuning would lose about as often as it gains; the output is the base "
              f"model, not fine-tuned (--skip-from 1.01 fine-tunes anyway)")
        run, unfrozen = None, []
    else:
        stopping = f"patience {patience}" if patience < epochs else "no early stopping"
        print(f"schedule: {epochs} epochs of {steps_per_epoch} steps of {batch_size} images, peak rate "
              f"{learning_rate:.3g}, {warmup} steps of warm-up, {stopping}")
        print(f"returns: {f'the average of the last {average_last} epochs' if average_last else 'the best epoch'}"
              + (f", or the base if none of the first {give_up[0]} epochs comes within {give_up[1]:.4f} of its "
                 f"validation accuracy, {base_val['accuracy']:.4f}" if args.give_up else ""))

        # Unfreeze the top of MobileNetV2; BatchNormalization stays frozen (see tinynet.model.unfreeze).
        unfrozen = unfreeze(model, from_layer)
        trainable, frozen = count_weights(model)
        print(f"unfrozen from {from_layer}: {len(unfrozen)} layers, {trainable:,} trainable, {frozen:,} frozen "
              "parameters")

        # Fine-tune on augmented batches, at a low peak rate reached after the warm-up, through the whole
        # schedule by default: on a small validation set, a plateau that early stopping would end on is noise.
        compile_model(model, cosine_schedule(learning_rate, total_steps, warmup), jit_compile=jit_compile(args.jit),
                      multipliers=depth_rates(model, args.layer_decay), label_smoothing=args.label_smoothing,
                      anchor=args.l2_sp)
        with timed(times, "train"):
            run = train(model, images, labels, epochs=epochs, batch_size=batch_size, seed=seed,
                        output=args.output, resume=args.resume, log_dir=args.log_dir, patience=patience,
                        augment=augment, baseline=(base_val["accuracy"], base_val["loss"]), shard=shard,
                        writes=writes_output(strategy), on_epoch=on_epoch, average_last=average_last,
                        give_up=give_up if args.give_up else None)
        report_divergence(run)
        if run.returned() == "base":
            print(f"fine-tuning gave up after {len(run.rows)} of {epochs} epochs: the output is the base model")
        elif not average_last and run.best_epoch == 0:
            print(f"no epoch beat the base model's validation accuracy {base_val['accuracy']:.4f} (loss "
                  f"{base_val['loss']:.4f}): the output is the base model")

    rows, best_epoch, returned = (run.rows, run.best_epoch, run.returned()) if run else ([], 0, "base")

    # Evaluate the best weights, on un-augmented validation and test images.
    with timed(times, "evaluate"):
        metrics = evaluate_splits(model, images, labels, batch_size, shard)
        calibrated = calibration.fit(split_probabilities(model, images["val"], batch_size, shard),
                                     splits.labels["val"])

    # Save, compiled for evaluate(), with the sidecar (one process writes).
    info = {"metrics": metrics}
    with all_finish_together(strategy, model):
        if writes_output(strategy):
            info = finish(model, "finetune", args, learning_rate=learning_rate, data=data, splits=splits, seed=seed,
                          history=rows, metrics=metrics, times=times, started=started,
                          best_epoch=best_epoch, returned=returned, average_last=average_last,
                          peak_rate=learning_rate, batch_size=batch_size,
                          give_up={"epoch": give_up[0], "margin": give_up[1], "gave_up": bool(run and run.gave_up),
                                   "cross_validated_accuracy": crossed, "skip_from": args.skip_from,
                                   "fine_tuned": run is not None},
                          augment=augment, base=str(args.base),
                          base_val_accuracy=base_val["accuracy"], base_metrics=base_info.get("metrics"),
                          unfrozen_layers=unfrozen, calibration=calibrated)
            base_test = (base_info.get("metrics") or {}).get("test", {}).get("accuracy", float("nan"))
            print(f"\ntest accuracy: base {base_test:.4f} -> fine-tuned {metrics['test']['accuracy']:.4f} "
                  f"after {len(rows)} epochs ({returned}) in {times['total']:.0f} s; "
                  "python megaTest.py says whether the difference is more than chance")
    return info


def give_up_epoch(epochs: int) -> int:
    """The epoch after which fine-tuning may give up: early enough that giving up saves most of
    the schedule's time, its first epoch (which traces the model) included."""
    return max(1, round(epochs * GIVE_UP_AT))


def chance_margin(accuracy: float, images: int) -> float:
    """How far below the base's validation accuracy fine-tuning may fall before it counts as worse:
    GIVE_UP_Z standard errors of the difference between two accuracies of about this size on this
    many images, and at least one image."""
    return max(GIVE_UP_Z * math.sqrt(2 * max(accuracy * (1 - accuracy), 1 / images) / images), 1 / images)
