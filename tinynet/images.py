"""One image file to the RGB pixels the model takes: the decoder of training, evaluation and prediction.

    bytes -> upright (EXIF orientation) -> RGB -> square (crop, pad or stretch) at the model's size

A square image no larger than the model's input is kept as it is: the model resizes it itself.
"""

from __future__ import annotations

import io
import os
import posixpath
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
# How a photo that is not square becomes square; "crop" measured best (README, bench_own_data).
SQUARE_METHODS = ("crop", "pad", "stretch")
BACKGROUND = (255, 255, 255)  # transparent pixels become white, as image viewers show them
PAD_GREY = (128, 128, 128)  # the model's own padding: 0 after scaling to [-1, 1]
MAX_PIXELS = 50_000_000  # larger images are refused, not decoded: 50 Mpx of RGB is 150 MB
JPEG_MAGIC = b"\xff\xd8\xff"  # the first three bytes of every JPEG file

# Set once for the process: warnings.catch_warnings() is not thread-safe, and images are decoded
# on every core. Oversized images are refused by MAX_PIXELS; a palette's transparency is handled.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", message="Palette images with Transparency", category=UserWarning)


def is_image_name(name: str) -> bool:
    """By extension, in any case: .jpg, .JPEG, .png, .webp, .bmp, .gif."""
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_image_file(name: str, read: Callable[[], bytes]) -> bool:
    """By extension, or else by content: a photo saved as .txt or with no extension is still a photo."""
    return is_image_name(name) or image_shape(read()) is not None


def image_shape(data: bytes) -> tuple[int, int] | None:
    """(height, width) as stored, read from the header alone; None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def decode_image(data: bytes, image_size: int | None = None, square: str = "crop") -> np.ndarray | None:
    """RGB uint8 pixels of an encoded image (a GIF's first frame), upright, or None if it is not
    a readable, sane image.

    With image_size, an image that is not a square of at most image_size pixels is made square
    (see square_image) at exactly image_size; JPEGs are decoded straight at a reduced scale when
    they are far larger, which is much faster and never goes below image_size."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_PIXELS or width < 1 or height < 1:
                return None
            if image_size and image.format == "JPEG":
                image.draft("RGB", (image_size, image_size))
            rgb = to_rgb(ImageOps.exif_transpose(image))
            if image_size and not keeps_size(rgb.height, rgb.width, image_size):
                rgb = square_image(rgb, image_size, square)
            return np.asarray(rgb)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None


def keeps_size(height: int, width: int, image_size: int) -> bool:
    """Whether decode_image keeps an image of this size as it is (a square no larger than
    image_size) rather than making it an image_size square."""
    return height == width <= image_size


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: 16-bit grey keeps its top 8 bits, transparency is composited on
    BACKGROUND, palette, CMYK and grey are converted."""
    if image.mode.startswith("I"):  # 16- or 32-bit integer grey
        pixels = np.asarray(image).astype(np.float64)
        if image.mode != "I" or pixels.max() > 255:
            pixels = pixels / 257
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def square_image(image: Image.Image, size: int, method: str = "crop") -> Image.Image:
    """The image as a size x size square: crop keeps the centre square, pad fits the whole image
    on grey, stretch scales each side on its own. Keras's Resizing(crop_to_aspect_ratio=True)
    or (pad_to_aspect_ratio=True) does the same inside the model."""
    width, height = image.size
    if method == "stretch":
        return image.resize((size, size), Image.BILINEAR)
    if method == "crop":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        return image.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
    if method == "pad":
        scale = size / max(width, height)
        inner = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new("RGB", (size, size), PAD_GREY)
        canvas.paste(image.resize(inner, Image.BILINEAR), ((size - inner[0]) // 2, (size - inner[1]) // 2))
        return canvas
    raise ValueError(f"unknown square method {method!r}; choose from {SQUARE_METHODS}")


def decode_jpegs(contents: list[bytes], max_side: int) -> list[np.ndarray] | None:
    """JPEGs that are all one square size of at most max_side pixels and carry no EXIF, as
    CIFAR-10's, decoded by TensorFlow in batches of a thousand, two at once: about twice as fast
    as PIL, which opens each image in Python. INTEGER_ACCURATE is libjpeg's default, which PIL
    uses, so the pixels are decode_image's. None for anything else (another format or size, a
    rotated photo, an unreadable file): decode_image then handles each image on its own."""
    if not contents or not all(data.startswith(JPEG_MAGIC) and data.find(b"Exif\0", 0, 65536) < 0
                               for data in contents):
        return None
    import tensorflow as tf

    def decode(data: tf.Tensor) -> tf.Tensor:
        # checked before decoding, so an image of another size in the tree is never decoded here
        same_size = tf.debugging.assert_equal(tf.io.extract_jpeg_shape(data)[:2], size)
        with tf.control_dependencies([same_size]):
            image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        return tf.ensure_shape(image, (*size, 3))

    options = tf.data.Options()
    options.autotune.enabled = False  # as in every pipeline here: see tinynet.batches.prefetched
    try:
        size = tuple(int(n) for n in tf.io.extract_jpeg_shape(contents[0])[:2])
        if size[0] != size[1] or size[0] > max_side:
            return None
        # a tensor first: given a list, tf.data inspects every item in Python
        batches = tf.data.Dataset.from_tensor_slices(tf.constant(contents)).batch(1000).map(
            lambda batch: tf.map_fn(decode, batch, fn_output_signature=tf.uint8), num_parallel_calls=2)
        return [image for batch in batches.with_options(options).as_numpy_iterator() for image in batch]
    except tf.errors.OpError:
        return None


def decode_all(contents: list[bytes], image_size: int, square: str) -> list[np.ndarray | None]:
    """Decode each file as RGB at image_size; a file that is not a readable image gets None.
    JPEGs that TensorFlow can decode in batches are; the others by PIL, on every core."""
    images = decode_jpegs(contents, image_size)
    if images is None:
        with ThreadPoolExecutor(os.cpu_count()) as pool:  # PIL releases the GIL while it decodes and resizes
            images = list(pool.map(lambda data: decode_image(data, image_size, square), contents))
    return images


def stack_images(images: list[np.ndarray], size: int, one_shape: bool) -> np.ndarray:
    """One array; unless all images (of every part) have one shape, the squares smaller than
    `size` are first resized to it."""
    if not one_shape:
        images = [image if image.shape[:2] == (size, size) else
                  np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)) for image in images]
    return np.stack(images)
