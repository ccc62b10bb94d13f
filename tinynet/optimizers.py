"""How the kit trains: Adam (one TensorFlow kernel per weight on TensorFlow), rates scaled by depth,
a warmed-up cosine schedule, and compiling a model for training or for saving."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from tinynet import backend
from tinynet.model import BASE_NAME


class LayerwiseAdam(keras.optimizers.Adam):
    """Keras's Adam, each weight's rate scaled by its multiplier (1 where none is given): deeper
    layers of the base, whose features are the most general, move the least (tinynet.model.depth_rates)."""

    def __init__(self, *args, multipliers: dict[str, float] | None = None, anchor: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.multipliers = multipliers or {}
        self.anchor = anchor

    def build(self, variables):
        super().build(variables)
        self.scales = [self.multipliers.get(variable.path, 1.0) for variable in variables]
        self.starts = []  # where each weight started, for the pull back
        if self.anchor:
            for variable in variables:
                self.starts.append(self.add_variable_from_reference(
                    variable, "start", initializer=lambda shape, dtype, value=variable.value: value))

    def scaled(self, variable, learning_rate):  # called with the backend's variable, which has no path
        return learning_rate * self.scales[self._get_variable_index(variable)]

    def pull_back(self, variable, learning_rate) -> None:
        """L2-SP, decoupled from Adam's scaling: each step takes the weight this share of the rate
        back toward where training started (Li et al. 2018), so few images cannot drag the
        pretrained features far."""
        if self.anchor:
            start = self.starts[self._get_variable_index(variable)]
            variable.assign_sub(self.scaled(variable, learning_rate) * self.anchor * (variable - start))

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(gradient, variable, self.scaled(variable, learning_rate))
        self.pull_back(variable, learning_rate)


class FusedAdam(LayerwiseAdam):
    """Keras's Adam, each weight's update done by one TensorFlow kernel (ResourceApplyAdam).

    Keras 3 writes the update as eleven element-wise operations, each a pass over the weights;
    the kernel does the same arithmetic in one pass (equal to rounding: tests/test_model.py), which
    cut the head's training time (bench/README.md). For training only: a model is saved
    compiled with Keras's own Adam, which any process loads without custom objects.
    """

    def update_step(self, gradient: tf.Tensor, variable: tf.Variable, learning_rate: tf.Tensor) -> None:
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].value.handle, v=self._velocities[index].value.handle,
            beta1_power=beta_1**step, beta2_power=beta_2**step, lr=tf.cast(self.scaled(variable, learning_rate), dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
        self.pull_back(variable, learning_rate)


def compile_model(model: keras.Model, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
                  steps_per_execution: int = 1, jit_compile: bool | str = "auto", for_saving: bool = False,
                  multipliers: dict[str, float] | None = None, label_smoothing: float = 0.0,
                  anchor: float = 0.0) -> None:
    """Adam and categorical cross-entropy on one-hot labels, as the original; on TensorFlow under
    the model's distribution strategy, where its optimizer's variables must be made. FusedAdam is
    TensorFlow's kernel: for_saving, and on other backends, Keras's own Adam (a saved file then
    loads anywhere without custom objects). `multipliers` scale the rate of named weights;
    label_smoothing moves that share of each target evenly onto every class; anchor is
    LayerwiseAdam's pull back toward the starting weights."""
    scope = model.distribute_strategy.scope() if backend.on_tensorflow() else contextlib.nullcontext()
    with scope:
        if for_saving:
            optimizer = keras.optimizers.Adam(learning_rate)
        else:
            fused = backend.on_tensorflow()
            optimizer = (FusedAdam if fused else LayerwiseAdam)(learning_rate, multipliers=multipliers, anchor=anchor)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing) if label_smoothing
            else "categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
        )


def depth_rates(model: keras.Model, decay: float) -> dict[str, float]:
    """Layer-wise rate decay: the rate multiplier of each weight of the base, decay**d for a layer
    d steps below the top (Conv_1 one, block_16 two, ... block_1 seventeen, block 0 eighteen, the
    first convolution nineteen); the head keeps the full rate. Empty when decay is 1."""
    if decay == 1:
        return {}
    multipliers = {}
    for layer in model.get_layer(BASE_NAME).layers:
        name = layer.name
        if name.startswith("block_"):
            depth = 18 - int(name.split("_")[1])
        else:
            depth = 1 if name == "Conv_1" else 18 if name.startswith("expanded_conv") else 19
        for weight in layer.weights:
            multipliers[weight.path] = decay ** depth
    return multipliers


def cosine_schedule(peak: float, total_steps: int, warmup_steps: int = 0) -> keras.optimizers.schedules.CosineDecay:
    """Linear warm-up from 0 to `peak` over warmup_steps, then a cosine decay to 0."""
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(0.0, max(1, total_steps - warmup_steps),
                                                      warmup_target=peak, warmup_steps=warmup_steps)
    return keras.optimizers.schedules.CosineDecay(peak, total_steps)
