"""CIFAR-10 style data: the Keras download, or an offline copy in one of four layouts.

Images stay uint8 at their stored size; the model resizes them batch by batch.
"""

from __future__ import annotations

import gzip
import io
import pickle
import posixpath
import re
import tarfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tinynet.errors import UserError

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
BATCH_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
IMAGE_PATH = re.compile(r"(?:^|.*/)(train|test)/([^/]+)/([^/]+)$")
CLASS_FOLDER = re.compile(r"(?:^|.*/)(train|test)/([^/]+)/?$")
MAX_PIXELS = 50_000_000  # larger images are refused, not decoded: 50 Mpx of RGB is 150 MB
GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip file
JPEG_MAGIC = b"\xff\xd8\xff"  # the first three bytes of every JPEG file
MAX_BAD_FRACTION = 0.01  # above 1% unreadable images the folder is broken, not noisy


@dataclass
class Dataset:
    x_train: np.ndarray  # (n, h, w, 3) uint8
    y_train: np.ndarray  # (n,) int
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_dataset(data_dir: str | None, image_size: int) -> Dataset:
    """Load CIFAR-10 from Keras (data_dir None) or from an offline copy.

    data_dir may be the official `cifar-10-batches-py` folder or `cifar-10-python.tar.gz`,
    or an image-folder tree `train/<class>/*`, `test/<class>/*`, as a folder or a `.tar.gz`.
    Folder images of mixed sizes are resized to image_size, since one array needs one size.
    """
    if data_dir is None:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
        return Dataset(x_train, y_train.ravel(), x_test, y_test.ravel(), CIFAR10_CLASSES, "keras")
    path = Path(data_dir)
    if not path.exists():
        raise UserError(f"--data-dir {path} does not exist")
    if path.is_dir() and (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    files = _list_files(path)
    names = {posixpath.basename(name) for name, _ in files}  # Path(name).name took 0.13 s more for 60,000
    if names.issuperset(BATCH_FILES):
        dataset = _load_batches(files)
    else:
        dataset = _load_image_tree(files, image_size, path)
    dataset.source = str(path)
    return dataset


def _list_files(path: Path) -> list[tuple[str, Callable[[], bytes] | None]]:
    """Every regular file under a folder or inside a tarball, as (relative name, reader);
    folders come as (name, None), so that an empty class folder is seen too."""
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if not p.name.startswith("."))
        return [(p.relative_to(path).as_posix(), p.read_bytes if p.is_file() else None)
                for p in found if p.is_file() or p.is_dir()]
    # Read every member once, in archive order, from the archive decompressed in one go:
    # tarfile reads a gzip stream in 512-byte pieces, which took 1 s longer for CIFAR-10.
    try:
        archive_bytes = path.read_bytes()
        if archive_bytes.startswith(GZIP_MAGIC):
            archive_bytes = gzip.decompress(archive_bytes)
        with tarfile.open(fileobj=io.BytesIO(archive_bytes)) as archive:
            contents = [(m.name, _member_bytes(archive, archive_bytes, m) if m.isfile() else None)
                        for m in archive if m.isfile() or m.isdir()]
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise UserError(f"--data-dir {path} is neither a folder nor a readable .tar.gz ({error})") from None
    return [(name, None if data is None else (lambda data=data: data)) for name, data in sorted(contents)]


def _member_bytes(archive: tarfile.TarFile, archive_bytes: bytes, member: tarfile.TarInfo) -> bytes:
    """A file's bytes, sliced from the archive in memory (extractfile() took 0.3 s longer for
    CIFAR-10); a sparse file's bytes are not stored in one piece, so tarfile reassembles them."""
    if member.issparse():
        return archive.extractfile(member).read()
    return archive_bytes[member.offset_data:member.offset_data + member.size]


def _load_batches(files: list[tuple[str, Callable[[], bytes]]]) -> Dataset:
    """The official python batches: pickled dicts of 3072-byte rows, channels first."""
    readers = {posixpath.basename(name): read for name, read in files}

    def unpickle(name: str) -> dict:
        return pickle.loads(readers[name](), encoding="bytes")

    def images_and_labels(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        batches = [unpickle(name) for name in names]
        x = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.concatenate([b[b"labels"] for b in batches])
        return np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64)

    x_train, y_train = images_and_labels(BATCH_FILES[:5])
    x_test, y_test = images_and_labels(BATCH_FILES[5:])
    class_names = CIFAR10_CLASSES
    if "batches.meta" in readers:
        class_names = [n.decode() for n in unpickle("batches.meta")[b"label_names"]]
    return Dataset(x_train, y_train, x_test, y_test, class_names, "")


def _load_image_tree(files: list[tuple[str, Callable[[], bytes]]], image_size: int, path: Path) -> Dataset:
    """train/<class>/* and test/<class>/*: class names from the folders, in sorted order."""
    by_split: dict[str, list[tuple[str, str, Callable[[], bytes]]]] = {"train": [], "test": []}
    folders: dict[str, set[str]] = {"train": set(), "test": set()}
    for name, read in files:
        match = (CLASS_FOLDER if read is None else IMAGE_PATH).match(name)
        if match:
            split, class_name = match.groups()[:2]
            folders[split].add(class_name)
            if read is not None:
                by_split[split].append((name, class_name, read))
    if not by_split["train"] or not by_split["test"]:
        raise UserError(
            f"--data-dir {path} is in no known layout: expected cifar-10-batches-py, "
            "cifar-10-python.tar.gz, or train/<class>/* and test/<class>/* image folders"
        )
    train_classes, test_classes = sorted(folders["train"]), sorted(folders["test"])
    if train_classes != test_classes:
        raise UserError(
            f"--data-dir {path}: test classes {test_classes} differ from train classes {train_classes}"
        )
    if len(train_classes) < 2:
        raise UserError(f"--data-dir {path} has {len(train_classes)} class folder; a classifier needs two or more")
    decoded = {split: _decode_all(items) for split, items in by_split.items()}
    _check_bad_images(decoded)
    arrays = {}
    for split, items in decoded.items():
        good = [(c, img) for _, c, img in items if img is not None]
        for class_name in train_classes:
            if not any(c == class_name for c, _ in good):
                raise UserError(f"--data-dir {path}: class folder {split}/{class_name} has no images")
        arrays[split] = [img for _, img in good], np.array([train_classes.index(c) for c, _ in good])
    all_images = arrays["train"][0] + arrays["test"][0]
    if len({img.shape for img in all_images}) > 1:
        for split, (images, labels) in arrays.items():
            arrays[split] = [_resize(img, image_size) for img in images], labels
    (x_train, y_train), (x_test, y_test) = [(np.stack(arrays[s][0]), arrays[s][1]) for s in ("train", "test")]
    return Dataset(x_train, y_train, x_test, y_test, train_classes, "")


def _decode_all(items: list[tuple[str, str, Callable[[], bytes]]]) -> list[tuple[str, str, np.ndarray | None]]:
    """Decode each file as RGB; a file that is not a readable image gets None."""
    contents = [read() for _, _, read in items]
    images = decode_jpegs(contents)
    if images is None:
        images = [decode_image(data) for data in contents]
    return [(name, class_name, image) for (name, class_name, _), image in zip(items, images, strict=True)]


def decode_jpegs(contents: list[bytes]) -> list[np.ndarray] | None:
    """JPEGs all of one size, as CIFAR-10's, decoded by TensorFlow in batches of a thousand, two at
    once: about twice as fast as PIL, which opens each image in Python. INTEGER_ACCURATE is libjpeg's
    default, which PIL uses, so the pixels are PIL's. None for anything else (another format,
    another size, an unreadable file): decode_image then handles each image on its own."""
    if not contents or not all(data.startswith(JPEG_MAGIC) for data in contents):
        return None
    import tensorflow as tf

    def decode(data: tf.Tensor) -> tf.Tensor:
        # checked before decoding, so a huge image in the tree is never decoded here
        same_size = tf.debugging.assert_equal(tf.io.extract_jpeg_shape(data)[:2], size)
        with tf.control_dependencies([same_size]):
            image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        return tf.ensure_shape(image, (*size, 3))

    options = tf.data.Options()
    options.autotune.enabled = False  # as in every pipeline here: see tinynet.training.prefetched
    try:
        size = tuple(int(n) for n in tf.io.extract_jpeg_shape(contents[0])[:2])
        if size[0] * size[1] > MAX_PIXELS:
            return None
        # a tensor first: given a list, tf.data inspects every item in Python (0.55 s for 60,000)
        batches = tf.data.Dataset.from_tensor_slices(tf.constant(contents)).batch(1000).map(
            lambda batch: tf.map_fn(decode, batch, fn_output_signature=tf.uint8), num_parallel_calls=2)
        return [image for batch in batches.with_options(options).as_numpy_iterator() for image in batch]
    except tf.errors.OpError:
        return None


def decode_image(data: bytes) -> np.ndarray | None:
    """RGB uint8 pixels of an encoded image, or None if it is not a readable, sane image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS or width < 1 or height < 1:
                    return None
                return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _check_bad_images(decoded: dict[str, list[tuple[str, str, np.ndarray | None]]]) -> None:
    """Skip a few unreadable images with a warning; refuse a folder where more than 1% are bad."""
    total = sum(len(items) for items in decoded.values())
    bad = [name for items in decoded.values() for name, _, img in items if img is None]
    if not bad:
        return
    listed = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
    if len(bad) > MAX_BAD_FRACTION * total:
        raise UserError(f"{len(bad)} of {total} images are unreadable (over 1%), e.g. {listed}: fix or remove them")
    warnings.warn(f"skipped {len(bad)} unreadable image(s) of {total}: {listed}", stacklevel=2)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def split_validation(labels: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices: each class gives the same fraction to validation."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(val_split * len(idx)))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
