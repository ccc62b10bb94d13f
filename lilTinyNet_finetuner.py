"""lilTinyNet, stage 2: fine-tune the base model on augmented images with the top of MobileNetV2 unfrozen.

    python lilTinyNet.py && python lilTinyNet_finetuner.py

Reads cifar10_lilTinyNet.h5 and its sidecar (same data and validation split, no flags to repeat),
unfreezes MobileNetV2 from --unfreeze up, keeps every BatchNormalization frozen, and trains at a
learning rate well below the head's, warmed up over the first epoch and decayed along a cosine.
Writes cifar10_finetuned_lilTinyNet.h5 and its .json sidecar. Measured results are in README.md.
"""

from __future__ import annotations

import math
import time

from tinynet import cli  # first: it quiets TensorFlow's C++ start-up logs

# isort: split

from tinynet.data import load_dataset
from tinynet.devices import add_device_args, jit_compile, set_up
from tinynet.errors import UserError
from tinynet.model import BLOCK_NAMES, check_num_classes, compile_model, count_weights, load_saved_model, unfreeze
from tinynet.training import (
    check_free_space,
    cosine_schedule,
    evaluate_splits,
    read_sidecar,
    report_divergence,
    run_info,
    save_model,
    sidecar_path,
    space_needed,
    split_data,
    timed,
    train,
    write_sidecar,
)


def parse_args(argv: list[str] | None = None):
    parser = cli.make_parser(__doc__)
    group = parser.add_argument_group("models")
    group.add_argument("--base", default="cifar10_lilTinyNet.h5", help="the model lilTinyNet.py trained")
    group.add_argument("--output", default="cifar10_finetuned_lilTinyNet.h5",
                       help="the fine-tuned model; its .json sidecar goes beside it")
    cli.add_data_args(parser, from_base=True)
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--unfreeze", default="block_3",
                       help="train MobileNetV2 from this block up: a block (block_1 .. block_16, or its number), "
                            "Conv_1 (the last conv only; --head gap or original) or all")
    group.add_argument("--epochs", type=cli.positive_int, default=30, help="at most; early stopping may end sooner")
    group.add_argument("--batch-size", type=cli.positive_int, default=128)
    group.add_argument("--learning-rate", type=cli.positive_float, default=3e-4,
                       help="peak Adam rate, reached after one warm-up epoch (the head trained at 1e-3)")
    group.add_argument("--patience", type=cli.positive_int, default=8,
                       help="stop after this many epochs without a better validation accuracy; the cosine's "
                            "last, low-rate epochs gain the most, so a short patience cuts off the best part")
    cli.add_run_args(group)
    add_device_args(parser)
    return parser.parse_args(argv)


def first_trainable_layer(choice: str) -> str:
    """'all', 'block_13', '13' or 'Conv_1' to the MobileNetV2 layer where training starts."""
    if choice == "all":
        return "Conv1"
    name = f"block_{choice}" if choice.isdigit() else choice
    name = name if name in BLOCK_NAMES or name == "Conv1" else f"{name}_expand"
    if name not in BLOCK_NAMES + ["Conv1"]:
        raise UserError(f"--unfreeze {choice}: expected all, Conv_1, or a block from block_1 to block_16")
    return name


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    base_info = read_sidecar(args.base)
    for flag, default in {"data_dir": None, "val_split": 0.1, "seed": 0}.items():  # unset: as the base run
        if getattr(args, flag) is None:
            setattr(args, flag, base_info.get("settings", {}).get(flag, default))
    from_layer = first_trainable_layer(args.unfreeze)
    cli.check_output(args.output)
    strategy, batch_size, learning_rate = set_up(args)
    times: dict[str, float] = {}
    started = time.perf_counter()

    # The base model as lilTinyNet.py saved it, and the same data and validation split.
    with strategy.scope():
        model = load_saved_model(args.base)
    with timed(times, "load_data"):
        image_size = base_info.get("settings", {}).get("image_size", 128)
        data = load_dataset(args.data_dir, image_size)
    check_num_classes(model, data.num_classes, args.base)
    check_free_space(args.output, space_needed(model))
    splits = split_data(data, args.val_split, args.seed)
    images = {split: x for split, (x, _) in splits.items()}
    labels = {split: y for split, (_, y) in splits.items()}
    print(f"data: {len(images['train'])} train (augmented), {len(images['val'])} validation, "
          f"{len(images['test'])} test images from {data.source}")

    # Unfreeze the top of MobileNetV2; BatchNormalization stays frozen (see tinynet.model.unfreeze).
    unfrozen = unfreeze(model, from_layer)
    trainable, frozen = count_weights(model)
    print(f"unfrozen from {from_layer}: {len(unfrozen)} layers, {trainable:,} trainable, {frozen:,} frozen parameters")

    # Fine-tune on augmented batches, at a low peak rate reached after a one-epoch warm-up.
    steps_per_epoch = math.ceil(len(images["train"]) / batch_size)
    compile_model(model, cosine_schedule(learning_rate, args.epochs * steps_per_epoch, steps_per_epoch),
                  jit_compile=jit_compile(args.jit))
    with timed(times, "train"):
        run = train(model, images, labels, epochs=args.epochs, batch_size=batch_size, seed=args.seed,
                    output=args.output, resume=args.resume, log_dir=args.log_dir, patience=args.patience,
                    augment=True)
    report_divergence(run)

    # Evaluate the best weights, on un-augmented validation and test images.
    with timed(times, "evaluate"):
        metrics = evaluate_splits(model, images, labels, batch_size)

    # Save, compiled for evaluate(), with the sidecar.
    compile_model(model, learning_rate, for_saving=True)
    with timed(times, "save"):
        save_model(model, args.output)
    times["total"] = round(time.perf_counter() - started, 2)
    info = run_info("finetune", args, data, splits, run.rows, metrics, times, best_epoch=run.best_epoch,
                    base=str(args.base),
                    base_metrics=base_info.get("metrics"), unfrozen_layers=unfrozen)
    write_sidecar(args.output, info)

    base_test = (base_info.get("metrics") or {}).get("test", {}).get("accuracy", float("nan"))
    print(f"\ntest accuracy: base {base_test:.4f} -> fine-tuned {metrics['test']['accuracy']:.4f} "
          f"after {len(run.rows)} epochs (best: {run.best_epoch}) in {times['total']:.0f} s")
    print(f"saved {args.output} and its sidecar {sidecar_path(args.output)}")
    return info


if __name__ == "__main__":
    cli.run(main)
