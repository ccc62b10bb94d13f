"""The lilTinyNet model: raw uint8 images in, class probabilities out.

    image (uint8, any size) -> scale to [-1, 1] -> resize -> MobileNetV2 (frozen) -> features -> classifier

The default head reads two inner blocks of MobileNetV2 rather than its last layer (see TAPS).

Everything up to `features` has no trainable weights, so while the base is frozen its output
for an image never changes: the training scripts compute it once and train only `classifier`.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers

from tinynet.errors import UserError

BASE_NAME = "mobilenetv2"
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)  # the widths Keras has ImageNet weights for
MIN_IMAGE_SIZE = 32  # MobileNetV2 halves the image five times
# MobileNetV2 blocks by name: unfreezing cuts here, never at a bare layer index.
BLOCK_NAMES = [f"block_{i}_expand" for i in range(1, 17)] + ["Conv_1"]
HEADS = ("blocks", "linear", "original")
DEFAULT_PENALTY = 1e-2  # the gap head's L2 penalty when it is not chosen on validation
# Where the default head reads MobileNetV2: block 13's expansion (stride 16) and the last block's
# output (stride 32), before Conv_1, the final 1x1 convolution to 1280 channels. Conv_1 is the most
# ImageNet-specific layer; on CIFAR-10 the features before it do better, and skipping it saves its work.
TAPS = ("block_13_expand_relu", "block_16_project_BN")


def build_base(alpha: float, weights: str | None, outputs: tuple[str, ...] = ()) -> keras.Model:
    """MobileNetV2 without its top: ImageNet weights, None (random) or a weights-file path.
    With `outputs`, the base ends at those layers and returns their feature maps.

    input_shape=None makes Keras load the weights trained at 224, whatever size we resize to:
    the same file online and offline, so a result measured here is the result users get.
    """
    check_base_settings(alpha, weights)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*`input_shape` is undefined")
        try:
            base = keras.applications.MobileNetV2(
                input_shape=None, alpha=alpha, include_top=False, weights=weights, name=BASE_NAME
            )
        except (ValueError, OSError) as error:  # a weights file for another network or width
            raise UserError(f"--weights {weights} does not fit MobileNetV2 alpha {alpha} ({error})") from None
        except Exception as error:  # Keras raises a bare Exception when the download fails
            raise UserError(f"could not download the ImageNet weights ({error}); offline, place "
                            f"{imagenet_file(alpha)} in {keras_cache()}/models/ or pass --weights PATH") from None
    if outputs:
        base = keras.Model(base.input, [base.get_layer(name).output for name in outputs], name=BASE_NAME)
    base.trainable = False
    return base


def imagenet_file(alpha: float) -> str:
    """The file name keras.applications downloads and caches for the 224 weights without the top."""
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"


def keras_cache() -> str:
    return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))


def check_base_settings(alpha: float, weights: str | None, image_size: int = MIN_IMAGE_SIZE) -> None:
    """Flags MobileNetV2 cannot honour, refused before anything is built."""
    if not alpha > 0:
        raise UserError(f"--alpha {alpha}: the width multiplier must be positive")
    if weights == "imagenet" and alpha not in IMAGENET_ALPHAS:
        raise UserError(f"--alpha {alpha}: ImageNet weights exist only for alpha in {IMAGENET_ALPHAS}")
    if image_size < MIN_IMAGE_SIZE:
        raise UserError(f"--image-size {image_size}: MobileNetV2 needs at least {MIN_IMAGE_SIZE} pixels")
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise UserError(f"--weights {weights}: no such file; pass 'imagenet', 'none' or a weights file")


def head_features(head: str, maps: keras.KerasTensor | list[keras.KerasTensor], image_size: int) -> keras.KerasTensor:
    """The parameter-free part of the head: the base's feature maps to one feature vector.

    blocks: each tapped map averaged over 64x64-pixel cells of the resized image (2x2 cells at
      128 pixels), so some of *where* things are survives; flattened and concatenated.
    linear: the classic global average pooling of the base's output.
    original: the original lilTinyNet's Flatten of the base's output.
    """
    if head == "blocks":
        return layers.Concatenate(name="features")(
            [pooled_cells(x, image_size, name) for name, x in zip(TAPS, maps, strict=True)])
    if head == "linear":
        return layers.GlobalAveragePooling2D(name="features")(maps)
    if head == "original":
        return layers.Flatten(name="features")(maps)
    raise ValueError(f"unknown head {head!r}; choose from {HEADS}")


def pooled_cells(x: keras.KerasTensor, image_size: int, name: str) -> keras.KerasTensor:
    """A feature map averaged over 64x64-pixel cells of the resized image, flattened."""
    pool = layers.AveragePooling2D(64 * x.shape[1] // image_size, padding="same", name=f"{name}_pool")
    return layers.Flatten(name=f"{name}_flat")(pool(x))


def classifier_layers(head: str, num_classes: int, penalty: float = DEFAULT_PENALTY) -> list[keras.Layer]:
    """The trainable part of the head, from features to class probabilities.

    blocks: the tapped maps differ in scale by orders of magnitude: BatchNormalization evens them
      out before Dense(512), without which the head learns worse (bench/README.md).
      It has no scale and offset of its own: the Dense layer after it learns any, so they would add
      nothing but the work of passing gradients back through Dense.
    linear: a linear layer whose weights pay an L2 penalty: on a few hundred images the penalty, not
      early stopping, is what keeps 1280 features from fitting noise.
    original: Dense(1024), Dropout(0.5), as the original lilTinyNet.
    """
    # float32 even under mixed precision: a float16 softmax loses small probabilities
    predictions = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions",
                               kernel_regularizer=keras.regularizers.L2(penalty) if head == "linear" else None)
    if head == "blocks":
        return [layers.BatchNormalization(center=False, scale=False, name="head_norm"),
                layers.Dense(512, activation="relu", name="head_dense"),
                layers.Dropout(0.5, name="head_dropout"), predictions]
    if head == "linear":
        return [predictions]
    return [layers.Dense(1024, activation="relu", name="head_dense"), layers.Dropout(0.5, name="head_dropout"),
            predictions]


def build_model(
    num_classes: int,
    image_size: int = 128,
    alpha: float = 1.0,
    weights: str | None = "imagenet",
    head: str = "blocks",
    square: str = "crop",
    penalty: float = DEFAULT_PENALTY,
) -> keras.Model:
    """The full classifier on raw uint8 images, with the base frozen and in inference mode."""
    image = keras.Input(shape=(None, None, 3), dtype="uint8", name="image")
    x = scale_and_resize(image, image_size, square)
    maps = build_base(alpha, weights, TAPS if head == "blocks" else ())(x, training=False)
    features = head_features(head, maps, image_size)
    extractor = keras.Model(image, features, name="feature_extractor")
    return with_classifier(extractor, make_classifier(head, features.shape[1:], num_classes, penalty), head)


def make_classifier(head: str, feature_shape: tuple[int, ...], num_classes: int,
                    penalty: float = DEFAULT_PENALTY) -> keras.Sequential:
    """The trainable head alone, on features: what trains on the cached features."""
    return keras.Sequential([keras.Input(feature_shape), *classifier_layers(head, num_classes, penalty)],
                            name="classifier")


def with_classifier(extractor: keras.Model, classifier: keras.Model, head: str) -> keras.Model:
    """The whole model: images through the frozen front, then the classifier."""
    return keras.Model(extractor.input, classifier(extractor.output), name=f"lilTinyNet_{head}")


def head_inputs(model: keras.Model) -> list[keras.KerasTensor]:
    """The base's feature maps as the saved model's head reads them, deepest last: the tensors of
    the model's own graph, so a model from them to the output (Grad-CAM's) is never disconnected."""
    layer_names = {layer.name for layer in model.layers}
    if all(f"{tap}_pool" in layer_names for tap in TAPS):  # the blocks head
        return [model.get_layer(f"{tap}_pool").input for tap in TAPS]
    return [model.get_layer("features").input]


def input_settings(model: keras.Model) -> tuple[int, str]:
    """The image size and the way photos were made square, as the model's own Resizing layer does
    them: what a picture given to the model must be prepared with (tinynet.images.decode_image)."""
    config = model.get_layer("resize").get_config()
    square = "crop" if config["crop_to_aspect_ratio"] else "pad" if config.get("pad_to_aspect_ratio") else "stretch"
    return config["height"], square


def scale_and_resize(image: keras.KerasTensor, image_size: int, square: str = "crop") -> keras.KerasTensor:
    """uint8 images to MobileNetV2's input: scaled to [-1, 1], then made a square of image_size
    the way the data loader makes photos square (tinynet.images.square_image): centre crop, pad
    (with 0, mid-grey) or stretch.

    Scaling comes first: both are linear, so the order changes nothing but the cost (16x fewer
    pixels to scale when 32-pixel images go to 128) and Resizing's input, which must be float:
    called eagerly on uint8, Resizing rounds its output to uint8, while predict() and fit() keep
    it float.
    """
    x = layers.Rescaling(1 / 127.5, offset=-1, name="scale")(image)  # exactly mobilenet_v2.preprocess_input
    return layers.Resizing(image_size, image_size, crop_to_aspect_ratio=square == "crop",
                           pad_to_aspect_ratio=square == "pad", name="resize")(x)


def mirrored(model: keras.Model) -> keras.Model:
    """The model's probabilities averaged over each image and its mirror image (test-time
    augmentation): the same weights run twice, so it takes twice as long. Built from Keras layers
    only: after the model's own resizing, a fixed matrix reverses the columns."""
    resized = model.get_layer("resize").output
    front, rest = keras.Model(model.input, resized, name="front"), keras.Model(resized, model.output, name="rest")
    image = keras.Input(shape=model.input.shape[1:], dtype=model.input.dtype, name="image")
    x = front(image)
    reverse = layers.Dense(x.shape[2], use_bias=False, trainable=False, name="reverse_columns")
    columns_last = layers.Permute((1, 3, 2), name="columns_last")(x)
    flipped = layers.Permute((1, 3, 2), name="columns_back")(reverse(columns_last))
    reverse.set_weights([np.eye(x.shape[2], dtype=np.float32)[::-1]])
    average = layers.Average(name="with_mirror")([rest(x), rest(flipped)])
    return keras.Model(image, average, name=f"{model.name}_mirrored")


def feature_extractor(model: keras.Model) -> keras.Model:
    """The frozen front of the model: raw images to the features the classifier reads."""
    return keras.Model(model.input, model.get_layer("features").output, name="feature_extractor")


def check_cached_head_matches(model: keras.Model, classifier: keras.Model, images: np.ndarray,
                              features: np.ndarray) -> None:
    """The assembled model must predict what the head predicted from the cached features.

    Called, not predict()ed: tracing the whole model to run it once costs more than the call. Called eagerly,
    the base rounds differently from the pass's graph (probabilities up to 8e-6 apart), hence
    a tolerance of 1e-4: a wrongly assembled model misses it by orders of magnitude."""
    from_images = keras.ops.convert_to_numpy(model(images, training=False))
    from_features = keras.ops.convert_to_numpy(classifier(features, training=False))
    if not (np.array_equal(from_images.argmax(1), from_features.argmax(1))
            and np.allclose(from_images, from_features, atol=1e-4)):
        raise RuntimeError("the assembled model disagrees with the head trained on cached features")


def first_trainable_layer(choice: str) -> str:
    """'all', 'block_13', '13' or 'Conv_1' to the MobileNetV2 layer where training starts."""
    if choice == "all":
        return "Conv1"
    name = f"block_{choice}" if choice.isdigit() else choice
    name = name if name in BLOCK_NAMES or name == "Conv1" else f"{name}_expand"
    if name not in BLOCK_NAMES + ["Conv1"]:
        raise UserError(f"--unfreeze {choice}: expected all, Conv_1, or a block from block_1 to block_16")
    return name


def unfreeze(model: keras.Model, from_layer: str) -> list[str]:
    """Make MobileNetV2 trainable from `from_layer` (a block name such as block_13_expand) to its top.

    BatchNormalization stays frozen everywhere: its moving statistics came from ImageNet's large
    batches; updating them from small, differently distributed CIFAR batches while the weights
    change under them wrecks the features the head relies on. In Keras 3 a BatchNormalization
    layer with trainable=False also always runs in inference mode. Recompile after calling this.
    Returns the names of the layers whose weights now train.
    """
    base = model.get_layer(BASE_NAME)
    names = [layer.name for layer in base.layers]
    if from_layer not in names:  # Conv_1 is not in a model whose head reads the blocks before it
        raise UserError(f"{from_layer} is not in this model's MobileNetV2, which ends at {names[-1]}: "
                        "unfreeze from a block up to there")
    start = names.index(from_layer)
    base.trainable = True
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= start and not isinstance(layer, layers.BatchNormalization)
    return [layer.name for layer in base.layers if layer.trainable and layer.weights]


def count_weights(model: keras.Model) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    frozen = sum(math.prod(w.shape) for w in model.non_trainable_weights)
    return trainable, frozen


def load_saved_model(path: str | Path) -> keras.Model:
    """Load a model the training scripts saved, or say in one line what is wrong and how to make it."""
    path = Path(path)
    make = "python lilTinyNet_finetuner.py" if "finetuned" in path.name else "python lilTinyNet.py"
    if not path.is_file():
        raise UserError(f"model {path} not found; make it with: {make}")
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # h5py, Keras and pickle each raise their own kinds for a foreign file
        raise UserError(f"{path} is not a readable Keras model ({type(error).__name__}: {error}); "
                        f"make it again with: {make}") from None
    return model


def check_num_classes(model: keras.Model, num_classes: int, path: str | Path) -> None:
    """A model trained for other classes cannot be evaluated or fine-tuned on this data."""
    if model.output_shape[-1] != num_classes:
        raise UserError(f"{path} predicts {model.output_shape[-1]} classes but the data has {num_classes}; "
                        "use the --data-dir it was trained on")
