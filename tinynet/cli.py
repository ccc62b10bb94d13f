"""Command-line plumbing shared by the scripts: common flags, user errors as one line, and the hold
on native stderr that quiets TensorFlow's start-up (used by tinynet/__init__.py)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tinynet.errors import UserError


@contextlib.contextmanager
def native_stderr_held() -> Iterator[None]:
    """Hold what C++ code writes to file descriptor 2, and show it only if the block fails.

    Since 2.19, TensorFlow's start-up lines are written before its logging reads
    TF_CPP_MIN_LOG_LEVEL (tensorflow/tensorflow#100442), so the variable cannot quiet them."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to quiet
        yield
        return
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)



def make_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose --help shows the script's docstring and every default."""
    return Parser(description=doc, formatter_class=Formatter)


class Parser(argparse.ArgumentParser):
    """A bad flag is one line and exit status 2, like every other user error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the docstring's line breaks kept. A default of None is chosen at
    run time (from the data or the base run), which the flag's own help describes."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def check_output(path: str, flag: str = "--output", suffix: str | None = ".h5") -> None:
    """Refuse, before any work, an output the run could not write at the end."""
    output = Path(path)
    if suffix and output.suffix != suffix:
        raise UserError(f"{flag} {path}: the model is saved as {suffix}; end the name with {suffix}")
    if not output.parent.resolve().is_dir():
        raise UserError(f"{flag} {path}: folder {output.parent} does not exist; create it first")
    try:  # ask the file system itself: permission bits say nothing for root or read-only mounts
        tempfile.TemporaryFile(dir=output.parent.resolve()).close()
    except OSError:
        raise UserError(f"{flag} {path}: folder {output.parent} is not writable; choose another") from None


def make_folder(path: str, flag: str) -> Path:
    """Create an output folder now, so a bad one stops the run before any work."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise UserError(f"{flag} {path}: cannot write there ({error.strerror}); choose another") from None
    return folder


def add_model_arg(group, default: str = "cifar10_finetuned_lilTinyNet.h5") -> None:
    """--model: the saved model a command uses."""
    group.add_argument("--model", default=default, help="a model the kit saved (its .json sidecar beside it)")


def add_moved_data_arg(group) -> None:
    """--data-dir for every command after stage 1: the data, split and image size are the ones the
    model's sidecar records; the flag only says where the data is now, if it moved."""
    group.add_argument("--data-dir", default=None,
                       help="where the model's data now is, if it moved (default: the folder or archive its "
                            "sidecar names); the split, image size and seed are always the recorded ones")


def add_data_args(parser: argparse.ArgumentParser, from_base: bool = False) -> None:
    """--data-dir, and for stage 1 --val-split, --test-split and --seed; stage 2 takes the base run's."""
    group = parser.add_argument_group("data")
    if from_base:
        add_moved_data_arg(group)
        return
    group.add_argument("--data-dir", default=None,
                       help="your images: class folders <class>/*, or train/<class>/* beside test/, val/ or both, "
                            "as a folder, .tar, .tar.gz, .tgz or .zip; or CIFAR-10's cifar-10-batches-py or "
                            "cifar-10-python.tar.gz; default: CIFAR-10, downloaded by Keras")
    group.add_argument("--val-split", type=fraction, default=None,
                       help="fraction of the training images held out for early stopping and model selection "
                            "when the layout has no val/; default: 10%%, more on small sets (20 images per "
                            "class where possible, at most 25%%)")
    group.add_argument("--test-split", type=fraction, default=None,
                       help="fraction held out as the test set when the layout has none (one folder per "
                            "class); default as --val-split")
    group.add_argument("--seed", type=int, default=0,
                       help="seeds the split, the weight initialisation and the shuffling")
    group.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                       help="read images from their files a batch at a time instead of holding them in memory; "
                            "auto: when they would take more than 4 GiB at the model's size (stage 2 and the "
                            "evaluators do as stage 1 did)")


def add_training_args(parser: argparse.ArgumentParser, title: str, *, epochs: str, batch_size: int | None,
                      batch_help: str, learning_rate: float, rate_help: str, patience: str) -> None:
    """The flags both trainers share, with each one's defaults and how it sizes them to the data;
    epochs and patience default to None: the trainer chooses them from the set's size."""
    group = parser.add_argument_group(title)
    group.add_argument("--epochs", type=positive_int, default=None,
                       help=f"at most; early stopping may end sooner; default {epochs}")
    group.add_argument("--batch-size", type=positive_int, default=batch_size, help=batch_help)
    group.add_argument("--learning-rate", type=positive_float, default=learning_rate, help=rate_help)
    group.add_argument("--patience", type=positive_int, default=None,
                       help=f"stop after this many epochs without a better validation accuracy (or an equal one and a "
                            f"lower loss); default {patience}")


def add_output_args(parser: argparse.ArgumentParser, output: str) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--output", default=output, help="the trained model; its .json sidecar goes beside it")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from its last completed epoch (same flags)")
    group.add_argument("--log-dir", default=None, help="write TensorBoard logs and epochs.csv here")


def run(main: Callable[[], object]) -> None:
    """Run a script's main(): a UserError or Ctrl-C becomes one line on stderr, not a traceback."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: completed epochs are saved; run the same command with --resume to continue",
              file=sys.stderr)
        sys.exit(130)
