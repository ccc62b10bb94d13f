"""Where the work runs: GPUs or the CPU, numeric precision, and tf.distribute strategies.

One GPU: mixed float16 (the softmax stays float32) and batches prefetched to the device.
Several GPUs: MirroredStrategy copies the model to each and splits every batch between them.
Several machines: MultiWorkerMirroredStrategy, configured by the TF_CONFIG environment variable.
The strategies are TensorFlow's: on another Keras backend (JAX) a run uses one device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator

import keras
import tensorflow as tf

from tinynet import backend
from tinynet.distributed import DataParallelRun
from tinynet.errors import UserError

PRECISIONS = ("auto", "float32", "mixed", "bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
# fit() under MultiWorkerMirroredStrategy fails in every Keras 3 release so far (keras-team/keras#20585);
# tests/test_devices.py fails on purpose the day a release fixes it, so this can be raised.
MULTIWORKER_FIT_FIXED = (3, 16)


def add_device_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("devices")
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto: mixed float16 on a GPU, float32 on a CPU; bfloat16: mixed bfloat16")
    group.add_argument("--strategy", choices=STRATEGIES, default="auto",
                       help="auto: mirrored over all GPUs when there are two or more, else default (one device); "
                            "multiworker: several machines, from TF_CONFIG")
    group.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                       help="XLA compilation of training steps: auto lets Keras decide (on with a GPU only)")
    group.add_argument("--distribute", action="store_true",
                       help="data-parallel over processes and hosts with keras.distribution (KERAS_BACKEND=jax): "
                            "start one process per host with KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES "
                            "and _PROCESS_ID set (README)")


class OneDevice:
    """What the scripts use of a tf.distribute strategy, on a backend without them: one replica."""

    num_replicas_in_sync = 1

    def scope(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


Strategy = tf.distribute.Strategy | OneDevice | DataParallelRun


def set_up(args: argparse.Namespace, seed: int) -> Strategy:
    """Strategy, precision and seed for a training run, and the output this worker writes."""
    if args.distribute:
        return set_up_processes(args, seed)
    strategy = make_strategy(args.strategy)  # first: collective ops must be set up before TensorFlow starts
    policy = set_precision(args.precision)
    keras.utils.set_random_seed(seed)
    print(describe(strategy, policy))
    args.output = worker_output(args.output)
    return strategy


def set_up_processes(args: argparse.Namespace, seed: int) -> DataParallelRun:
    """--distribute: this process's place among the data-parallel processes (tinynet.distributed)."""
    if backend.on_tensorflow():
        raise UserError("--distribute runs on Keras's JAX backend: set KERAS_BACKEND=jax (pip install -r "
                        "requirements-jax.txt); on TensorFlow, --strategy mirrored spreads over one machine's GPUs")
    if args.strategy not in ("auto", "default"):
        raise UserError(f"--distribute replaces --strategy {args.strategy}")
    run = DataParallelRun()
    policy = set_precision(args.precision)
    keras.utils.set_random_seed(seed)
    print(f"devices: process {run.process} of {run.processes}, {run.num_replicas_in_sync} device(s) in all, "
          f"precision {policy}, {backend.name()} {backend.version()}")
    return run


def batch_slice(strategy: Strategy, batch_size: int) -> slice | None:
    """This process's slice of every global batch under --distribute; None elsewhere (one process
    takes whole batches, and a tf.distribute strategy splits them itself)."""
    return strategy.slice_of(batch_size) if isinstance(strategy, DataParallelRun) else None


def writes_output(strategy: Strategy) -> bool:
    """Whether this process writes the model, its sidecar and the resume state: under --distribute
    process 0 alone does (the copies are the same)."""
    return not isinstance(strategy, DataParallelRun) or strategy.process == 0


@contextlib.contextmanager
def all_finish_together(strategy: Strategy, model: keras.Model) -> Iterator[None]:
    """Around a run's saving: under --distribute the processes stop training together, and the
    ones that do not write (writes_output) wait for the one that does, so none leaves first."""
    if not isinstance(strategy, DataParallelRun):
        yield
        return
    strategy.stop(model)
    yield
    strategy.wait_for_all()


def scaled(strategy: Strategy, batch_size: int, learning_rate: float) -> tuple[int, float]:
    """The global batch (batch_size per replica) and the learning rate scaled linearly with it,
    the usual rule for data-parallel training."""
    replicas = strategy.num_replicas_in_sync
    return batch_size * replicas, learning_rate * replicas


def set_precision(choice: str) -> str:
    """Set Keras's global dtype policy; returns the policy's name."""
    policy = {"auto": "mixed_float16" if gpu_count() else "float32", "float32": "float32",
              "mixed": "mixed_float16", "bfloat16": "mixed_bfloat16"}[choice]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def gpu_count() -> int:
    """GPUs the backend sees."""
    if backend.on_tensorflow():
        return len(tf.config.list_physical_devices("GPU"))
    import jax  # the only other backend the kit runs on

    return sum(device.platform == "gpu" for device in jax.devices())


def make_strategy(choice: str) -> Strategy:
    """The distribution strategy: its scope() is where models are built and compiled."""
    if not backend.on_tensorflow():
        if choice in ("mirrored", "multiworker"):
            raise UserError(f"--strategy {choice} is a TensorFlow strategy; under KERAS_BACKEND={backend.name()} "
                            "a run uses one device (--strategy auto or default)")
        return OneDevice()
    if choice == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multiworker needs TF_CONFIG describing the cluster and this worker's index")
        if tuple(int(part) for part in keras.version().split(".")[:2]) < MULTIWORKER_FIT_FIXED:
            raise UserError(f"Keras {keras.version()}'s fit() fails under MultiWorkerMirroredStrategy "
                            "(keras-team/keras#20585); use one machine (--strategy mirrored), or several with "
                            "KERAS_BACKEND=jax and --distribute (README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if choice == "mirrored" or (choice == "auto" and gpu_count() >= 2):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def jit_compile(choice: str) -> bool | str:
    """keras compile's jit_compile: XLA pays on GPUs; DepthwiseConv2D under XLA can be slow on a CPU.
    On JAX, auto and on are jax.jit (XLA is JAX's only compiler); off runs every step eagerly."""
    return {"auto": "auto", "on": True, "off": False}[choice]


def describe(strategy: Strategy, policy: str) -> str:
    """One line on what the run uses, so a GPU that the backend cannot see is noticed at once."""
    gpus = gpu_count()
    no_gpu = ("the CPU (no GPU visible to TensorFlow; TF_CPP_MIN_LOG_LEVEL=0 shows its start-up log)"
              if backend.on_tensorflow() else f"the CPU (no GPU visible to {backend.name()})")
    where = f"{gpus} GPU(s)" if gpus else no_gpu
    worker = json.loads(os.environ["TF_CONFIG"])["task"] if "TF_CONFIG" in os.environ else None
    cluster = f", worker {worker['index']}" if worker else ""
    return (f"devices: {where}, {strategy.num_replicas_in_sync} replica(s){cluster}, precision {policy}, "
            f"Keras backend {backend.name()} {backend.version()}")


def worker_output(path: str) -> str:
    """Under several workers only the chief writes the output (the "chief" task, or worker 0 when
    there is none); the others write <stem>.worker<N>.h5 beside it, so no two write one file."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {"type": "chief", "index": 0})
    chief = task["type"] == "chief" or (task["index"] == 0 and "chief" not in config.get("cluster", {}))
    if chief:
        return path
    stem, suffix = os.path.splitext(path)
    return f"{stem}.{task['type']}{task['index']}{suffix}"
