"""Data-parallel training across processes and hosts: keras.distribution on the JAX backend.

Start one process per host (or several on one, for a test), each told its place by the variables
keras.distribution.initialize reads:

    KERAS_DISTRIBUTION_JOB_ADDRESSES   host:port of every process, comma-separated; the first coordinates
    KERAS_DISTRIBUTION_NUM_PROCESSES   how many processes there are
    KERAS_DISTRIBUTION_PROCESS_ID      this one's index, 0 to NUM_PROCESSES - 1

Every process holds the whole model. Each global batch is cut into one slice per process, each
process reads only its slice, and the gradients are all-reduced, so every copy takes the same
step: the run is the one-process run with the global batch, up to the order of float sums.
Process 0 alone writes the model and its sidecar.
"""

from __future__ import annotations

import contextlib
import os
import sys

import keras
import numpy as np

from tinynet.errors import UserError

ADDRESS_VARIABLE = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
LOST_PEER_SIGNS = ("Gloo", "Connection reset by peer", "heartbeat timeout")  # in what a collective raises


class DataParallelRun:
    """What the scripts use of a tf.distribute strategy (scope, replicas), for keras.distribution."""

    def __init__(self) -> None:
        import jax

        # before anything starts JAX's runtime: CPUs all-reduce across processes through gloo
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if os.environ.get(ADDRESS_VARIABLE):
            keras.distribution.initialize()
        self.distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices(),
                                                            auto_shard_dataset=False)  # each process slices its own
        keras.distribution.set_distribution(self.distribution)
        self.process, self.processes = jax.process_index(), jax.process_count()
        self.num_replicas_in_sync = len(keras.distribution.list_devices())
        sys.excepthook = self.exit_on_lost_peer

    def scope(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # the distribution is set for the whole run

    def stop(self, model: keras.Model) -> None:
        """Training is over: show the weights' digest (equal in every process when the copies are)
        and leave each process its copy, to compile and save without collective steps."""
        print(f"process {self.process}: weights {digest(model)}")
        keras.distribution.set_distribution(None)

    def wait_for_all(self) -> None:
        """Until every process is here (process 0 has written its files): a process that leaves
        early fails the run's shutdown."""
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("lilTinyNet finished")

    def exit_on_lost_peer(self, kind: type, error: BaseException, trace) -> None:
        """A process that died (killed, out of memory, its host gone) fails the others' next
        collective step: one line, and out at once, not after JAX's shutdown barrier times out."""
        if any(sign in str(error) for sign in LOST_PEER_SIGNS):
            print(f"error: process {self.process}: another process of the run stopped "
                  f"({str(error).splitlines()[0][:160]}); start them all again with --resume", file=sys.stderr)
            sys.stderr.flush()
            os._exit(3)
        sys.__excepthook__(kind, error, trace)

    def slice_of(self, batch_size: int) -> slice:
        """This process's share of every global batch."""
        share = batch_size // self.processes
        return slice(self.process * share, (self.process + 1) * share)


def gather(array: np.ndarray) -> np.ndarray:
    """Every process's rows, in process order, in every process (all the same length)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def check_same_everywhere(value: int, what: str) -> None:
    """Refuse a run whose processes disagree on `value` (each process's own reading of it)."""
    values = gather(np.array([value]))
    if len(set(values.tolist())) > 1:
        raise UserError(f"the processes disagree on {what}: {values.tolist()}")


def local_call(model: keras.Model):
    """The model as a function of a NumPy batch computed on this process alone. Its weights are the
    same in every process: predict() would treat each process's batch as a slice of a global one."""
    import jax

    trainable = [np.asarray(v.value) for v in model.trainable_variables]
    frozen = [np.asarray(v.value) for v in model.non_trainable_variables]
    device = jax.local_devices()[0]
    trainable, frozen = jax.device_put(trainable, device), jax.device_put(frozen, device)
    call = jax.jit(lambda trainable, frozen, batch: model.stateless_call(trainable, frozen, batch, training=False)[0])
    return lambda batch: np.asarray(call(trainable, frozen, jax.device_put(batch, device)))


def digest(model: keras.Model) -> str:
    """A short hash of the model's weights, printed by every process: equal when the copies are."""
    import hashlib

    return hashlib.sha256(b"".join(np.asarray(w, np.float32).tobytes() for w in model.get_weights())).hexdigest()[:16]
