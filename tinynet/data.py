"""Data sets: the Keras CIFAR-10 download, its official batches, or a user's folder of images.

A folder or archive holds one of these layouts (with or without one top folder around it):

    train/<class>/*  test/<class>/*                 test/ is the test set
    train/<class>/*  val/<class>/*                  val/ (or valid/, validation/) is the test set
    train/<class>/*  val/<class>/*  test/<class>/*  val/ is the validation set, test/ the test set
    <class>/*                                       validation and test sets are carved from it

Validation sets that the layout does not give are carved from the training images by split_data,
stratified and seeded. Images stay uint8; photos are made square at the model's size when read.
"""

from __future__ import annotations

import pickle
import posixpath
import warnings
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinynet.errors import UserError
from tinynet.images import SQUARE_METHODS, decode_all, image_shape, is_image_file, stack_images
from tinynet.sources import Reader, list_files
from tinynet.streaming import ImageFiles, streams

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # what keras.datasets.cifar10 fetches
BATCH_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
HELD_OUT_FOLDERS = {"test": "test", "val": "val", "valid": "val", "validation": "val"}  # folder name: split
MAX_BAD_FRACTION = 0.01  # above 1% unreadable images the folder is broken, not noisy
SIZE_SAMPLE = 200  # images whose size is read to choose the default image size
PHOTO_SIZE = 224  # MobileNetV2's native input, where its ImageNet features were learnt
UPSCALE = 4  # small images are upscaled 4x by default, as the original upscaled CIFAR-10's 32 pixels to 128
SMALLEST_SIZE = 96  # MobileNetV2's smallest ImageNet input: below it its features fall away fast (bench_tiny_images)


@dataclass
class Part:
    """The images of one folder of the source (train/, test/ or val/, or the only one)."""

    images: np.ndarray | ImageFiles  # (n, h, w, 3) uint8, in memory or read from the files
    labels: np.ndarray  # (n,) int
    files: list[str] = field(default_factory=list)  # path of each image in the source; empty for CIFAR batches


@dataclass
class Dataset:
    parts: dict[str, Part]  # "train", and "val" and "test" where the layout gives them
    class_names: list[str]
    source: str
    image_size: int  # the model's input size: given, or chosen from the images
    layout: str  # the layout in words, for the log
    square: str = "crop"  # how photos were made square (tinynet.images.square_image)
    streamed: bool = False  # images read from their files a batch at a time (tinynet.streaming)
    unreadable: list[str] = field(default_factory=list)  # files a streamed run found unreadable and left out

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_dataset(data_dir: str | None, image_size: int | None = None, square: str = "crop", stream: str = "auto",
                 skip: Collection[str] = ()) -> Dataset:
    """Load CIFAR-10 from Keras (data_dir None) or a folder or archive in one of the layouts above,
    or the official `cifar-10-batches-py` folder or `cifar-10-python.tar.gz`.

    image_size None chooses it from the images (default_image_size). Images that are not squares
    of at most image_size pixels are made square by `square` at image_size as they are read.
    A folder too large for memory (tinynet.streaming.streams) is not read here: its parts hold
    ImageFiles, decoded a batch at a time. Files in `skip` (unreadable, as a streamed run found
    them) are left out."""
    if square not in SQUARE_METHODS:
        raise ValueError(f"unknown square method {square!r}")
    if data_dir is None:
        return _keras_cifar10(image_size)
    path = Path(data_dir)
    if not path.exists():
        raise UserError(f"--data-dir {path} does not exist")
    files = list_files(path)
    names = {posixpath.basename(name) for name, _ in files}  # Path(name).name is slower for 60,000
    if names.issuperset(BATCH_FILES):
        dataset = _load_batches(files, image_size or default_image_size([(32, 32)]))
    else:
        dataset = _load_image_tree(files, image_size, square, path, stream, set(skip))
    dataset.source, dataset.square = str(path), square
    return dataset


def _keras_cifar10(image_size: int | None) -> Dataset:
    """keras.datasets.cifar10, downloaded once into $KERAS_HOME/datasets."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as error:  # urllib, ssl, proxies and Keras's own checks each raise their own kinds
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"could not download CIFAR-10 from {CIFAR10_URL} ({reason}); offline, pass "
                        "--data-dir with a copy (that archive, its cifar-10-batches-py folder, or image folders)"
                        ) from None
    parts = {"train": Part(x_train, y_train.ravel()), "test": Part(x_test, y_test.ravel())}
    return Dataset(parts, CIFAR10_CLASSES, "keras", image_size or default_image_size([(32, 32)]),
                   "the Keras download")


def default_image_size(shapes: list[tuple[int, int]]) -> int:
    """The model's input size for images of these (height, width): 4x small images, as the original
    did for CIFAR-10, in steps of 32 pixels and never below 96; photos at MobileNetV2's native 224."""
    side = float(np.median([min(shape) for shape in shapes]))
    return int(min(PHOTO_SIZE, max(SMALLEST_SIZE, 32 * round(UPSCALE * side / 32))))


def _load_batches(files: list[tuple[str, Reader | None]], image_size: int) -> Dataset:
    """The official python batches: pickled dicts of 3072-byte rows, channels first."""
    readers = {posixpath.basename(name): read for name, read in files if read}

    def unpickle(name: str) -> dict:
        return pickle.loads(readers[name](), encoding="bytes")

    def part(names: list[str]) -> Part:
        batches = [unpickle(name) for name in names]
        x = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.concatenate([b[b"labels"] for b in batches])
        return Part(np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64))

    class_names = CIFAR10_CLASSES
    if "batches.meta" in readers:
        class_names = [n.decode() for n in unpickle("batches.meta")[b"label_names"]]
    parts = {"train": part(BATCH_FILES[:5]), "test": part(BATCH_FILES[5:])}
    return Dataset(parts, class_names, "", image_size, "the official CIFAR-10 batches")


def _load_image_tree(files: list[tuple[str, Reader | None]], image_size: int | None, square: str,
                     path: Path, stream: str, skip: set[str]) -> Dataset:
    """Class folders, in one of the layouts of this module's docstring; class names in sorted order."""
    kinds = {name: is_image_file(name, read) for name, read in files if read and name not in skip}
    images = [(name, read) for name, read in files if read and kinds.get(name)]
    others = [name for name, read in files if name in kinds and not kinds[name]]
    top = _top_folder(images)
    images = [(name[len(top):], read) for name, read in images]
    folders = [name[len(top):] for name, read in files if read is None and name.startswith(top)]
    layout, prefixes, by_part, class_folders, stray = _sort_into_parts(images, folders, path)
    if others or stray:
        skipped = [*others, *(top + name for name in stray)]
        print(f"note: skipped {len(skipped)} file(s) that are not images in class folders: "
              + ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else ""))
    class_names = _check_classes(class_folders, prefixes, path)
    _check_not_empty(by_part, class_names, prefixes, path)
    if image_size is None:
        everything = [item for items in by_part.values() for item in items]
        sample = everything[::max(1, len(everything) // SIZE_SAMPLE)]
        image_size = default_image_size([s for s in (image_shape(read()) for _, _, read in sample) if s] or [(32, 32)])
    if streams(sum(len(items) for items in by_part.values()), image_size, stream):
        parts = {part: _part(items, _image_files(items, image_size, square, top), class_names, top)
                 for part, items in by_part.items()}
        return Dataset(parts, class_names, "", image_size, layout + ", streamed from the files", streamed=True)
    decoded = {part: _decode_all(items, image_size, square) for part, items in by_part.items()}
    check_unreadable([top + name for items in decoded.values() for name, _, image in items if image is None],
                     sum(len(items) for items in decoded.values()))
    good = {part: [(name, class_name, image) for name, class_name, image in items if image is not None]
            for part, items in decoded.items()}
    _check_not_empty(good, class_names, prefixes, path)
    one_shape = len({image.shape for items in good.values() for _, _, image in items}) == 1
    parts = {part: _part(items, stack_images([image for _, _, image in items], image_size, one_shape), class_names, top)
             for part, items in good.items()}
    return Dataset(parts, class_names, "", image_size, layout)


def _image_files(items: list[tuple[str, str, Reader]], image_size: int, square: str, top: str) -> ImageFiles:
    return ImageFiles([top + name for name, _, _ in items], [read for _, _, read in items], image_size, square)


def _part(items: list[tuple[str, str, object]], images: np.ndarray | ImageFiles, class_names: list[str],
          top: str) -> Part:
    return Part(images, np.array([class_names.index(class_name) for _, class_name, _ in items]),
                [top + name for name, _, _ in items])


def _top_folder(images: list[tuple[str, Reader]]) -> str:
    """The folders that wrap the whole tree, as 'flowers5/' (most archives have one), or ''.
    A folder named like a split (train, test, val) is part of the layout, never a wrapper."""
    top = ""
    while True:
        rest = [name[len(top):] for name, _ in images]
        firsts = {name.split("/")[0] for name in rest}
        if len(firsts) != 1 or any("/" not in name for name in rest):
            return top
        first = firsts.pop()
        if first.lower() in ("train", *HELD_OUT_FOLDERS):
            return top
        top += first + "/"


def _sort_into_parts(images: list[tuple[str, Reader]], folders: list[str], path: Path):
    """Which part and class each image belongs to, by the layout its top-level folders show.
    Returns the layout in words, each part's folder ('train/', or '' for one folder per class),
    {part: [(name, class, reader)]}, {part: class folders seen}, and images outside class folders."""
    tops = {name.split("/")[0] for name, _ in images if "/" in name}
    splits = {top: "train" if top.lower() == "train" else HELD_OUT_FOLDERS.get(top.lower()) for top in tops}
    if any(splits.values()):
        named = Counter(splits.values())
        if None in named or "train" not in named or max(named.values()) > 1:
            raise UserError(_unknown_layout(path, f"found folders {', '.join(sorted(tops))}"))
        if set(named) == {"train", "val"}:  # train/ and val/: val/ is what the model is tested on
            splits = {top: "test" if split == "val" else split for top, split in splits.items()}
        order = ("train", "val", "test")
        named_tops = sorted(splits.items(), key=lambda item: order.index(item[1]))
        layout = " and ".join(f"{top}/ ({split})" for top, split in named_tops)
        depth = 1
    else:
        splits, layout, depth = {"": "train"}, "one folder per class (validation and test carved from it)", 0
    prefixes = {split: f"{top}/" if top else "" for top, split in splits.items()}
    by_part: dict[str, list] = {split: [] for split in prefixes}
    class_folders: dict[str, set[str]] = {split: set() for split in prefixes}
    stray = []
    for name, read in images:
        pieces = name.split("/")
        if len(pieces) < depth + 2:
            stray.append(name)
            continue
        split = splits[pieces[0] if depth else ""]
        by_part[split].append((name, pieces[depth], read))
        class_folders[split].add(pieces[depth])
    for pieces in (name.split("/") for name in folders):
        if len(pieces) == depth + 1 and (pieces[0] if depth else "") in splits:
            class_folders[splits[pieces[0] if depth else ""]].add(pieces[depth])
    if not any(by_part.values()):
        raise UserError(_unknown_layout(path, "found no images in class folders"))
    return layout, prefixes, by_part, class_folders, stray


def _unknown_layout(path: Path, found: str) -> str:
    return (f"--data-dir {path} is in no known layout ({found}): expected class folders <class>/*, or "
            "train/<class>/* with test/ and/or val/ beside it, or cifar-10-batches-py")


def _check_classes(class_folders: dict[str, set[str]], prefixes: dict[str, str], path: Path) -> list[str]:
    """The class names, the same in every part, at least two."""
    classes = sorted(class_folders["train"])
    for part, names in class_folders.items():
        if sorted(names) != classes:
            raise UserError(f"--data-dir {path}: {prefixes[part] or part} classes {sorted(names)} differ from "
                            f"train classes {classes}")
    if len(classes) < 2:
        raise UserError(f"--data-dir {path} has {len(classes)} class folder; a classifier needs two or more")
    return classes


def _check_not_empty(by_part: dict[str, list], class_names: list[str], prefixes: dict[str, str], path: Path) -> None:
    for part, items in by_part.items():
        missing = set(class_names) - {class_name for _, class_name, _ in items}
        if missing:
            raise UserError(f"--data-dir {path}: class folder {prefixes[part]}{min(missing)} has no images")


def _decode_all(items: list[tuple[str, str, Reader]], image_size: int, square: str
                ) -> list[tuple[str, str, np.ndarray | None]]:
    images = decode_all([read() for _, _, read in items], image_size, square)
    return [(name, class_name, image) for (name, class_name, _), image in zip(items, images, strict=True)]


def check_unreadable(bad: list[str], total: int) -> None:
    """Skip a few unreadable images with a warning; refuse a folder where more than 1% are bad."""
    if not bad:
        return
    listed = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
    if len(bad) > MAX_BAD_FRACTION * total:
        raise UserError(f"{len(bad)} of {total} images are unreadable (over 1%), e.g. {listed}: fix or remove them")
    warnings.warn(f"skipped {len(bad)} unreadable image(s) of {total}: {listed}", stacklevel=2)


# Splits ----------------------------------------------------------------------------------------

MIN_HELD_OUT_PER_CLASS = 20  # a split with fewer images per class measures accuracy in coarse steps
HELD_OUT_RANGE = (0.1, 0.25)  # the fractions of the training images a carved split may take


@dataclass
class Splits:
    """Train, validation and test images with integer labels; the fraction of the training images
    carved into validation and test, and which files went there (recorded in the sidecar, so that
    later stages and the evaluators see the same split)."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    fractions: dict[str, float]
    carved: dict[str, list[str]]


def held_out_fraction(labels: np.ndarray) -> float:
    """The default fraction to carve for validation or test: 10% of a large set, more of a small
    one so that each class keeps MIN_HELD_OUT_PER_CLASS images where it can, at most 25%."""
    smallest = int(np.bincount(labels).min())
    return float(np.clip(MIN_HELD_OUT_PER_CLASS / max(smallest, 1), *HELD_OUT_RANGE))


def split_data(data: Dataset, val_split: float | None, test_split: float | None, seed: int,
               recorded: dict[str, list[str]] | None = None) -> Splits:
    """Validation and test sets as the layout gives them, else carved from the training images:
    stratified, seeded, test first; a fraction of None is held_out_fraction's. With `recorded`,
    the files a base run carved go where they went."""
    train = data.parts["train"]
    indices = np.arange(len(train.labels))
    chosen: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
    carved: dict[str, list[str]] = {}
    fractions: dict[str, float] = {}
    for split, fraction, salt in (("test", test_split, 1), ("val", val_split, 0)):
        if split in data.parts:
            part = data.parts[split]
            chosen[split] = part.images, part.labels, part.files
            continue
        fraction = fractions[split] = fraction or held_out_fraction(train.labels)
        if recorded and split in recorded and train.files:
            mask = _recorded_mask([train.files[i] for i in indices], recorded[split], split)
        else:
            rng = np.random.default_rng(seed if salt == 0 else (seed, salt))
            mask = np.isin(np.arange(len(indices)), stratified_pick(train.labels[indices], fraction, rng))
        picked, indices = indices[mask], indices[~mask]
        files = [train.files[i] for i in picked] if train.files else []
        chosen[split] = train.images[picked], train.labels[picked], files
        if files:
            carved[split] = files
    chosen["train"] = train.images[indices], train.labels[indices], []
    return Splits({s: chosen[s][0] for s in ("train", "val", "test")},
                  {s: chosen[s][1] for s in ("train", "val", "test")}, fractions, carved)


def drop_unreadable(data: Dataset, splits: Splits, readable: dict[str, np.ndarray]) -> Splits:
    """The splits without the images a streamed pass could not read (readable: a mask per split),
    refused above 1% as when a folder is read into memory; the files are recorded in data.unreadable."""
    bad = [name for split, mask in readable.items()
           for name, ok in zip(splits.images[split].names, mask, strict=True) if not ok]
    check_unreadable(bad, sum(len(mask) for mask in readable.values()))
    data.unreadable = sorted(bad)
    gone = set(bad)
    return Splits({split: x[readable[split]] for split, x in splits.images.items()},
                  {split: y[readable[split]] for split, y in splits.labels.items()}, splits.fractions,
                  {split: [name for name in names if name not in gone] for split, names in splits.carved.items()})


def data_record(data: Dataset, splits: Splits, seed: int) -> dict:
    """What the sidecar keeps of the data: enough for load_recorded to rebuild the same split."""
    return {"source": data.source, "layout": data.layout, "image_size": data.image_size, "square": data.square,
            "streamed": data.streamed, "unreadable": data.unreadable, "seed": seed,
            **{f"{split}_split": f for split, f in splits.fractions.items()},
            **{split: len(labels) for split, labels in splits.labels.items()}, "carved": splits.carved}


def load_recorded(record: dict, data_dir: str | None = None) -> tuple[Dataset, Splits]:
    """The data and split a model was trained on, from its sidecar's data record (or data_dir)."""
    data = load_recorded_data(record, data_dir)
    return data, split_recorded(data, record)


def load_recorded_data(record: dict, data_dir: str | None = None) -> Dataset:
    """The data a model was trained on, at its image size: from data_dir, else the record's source."""
    source = data_dir or record.get("source")
    return load_dataset(None if source in (None, "keras") else source, record.get("image_size"),
                        record.get("square", "crop"), "on" if record.get("streamed") else "off",
                        record.get("unreadable", ()))


def split_recorded(data: Dataset, record: dict) -> Splits:
    """The split the record describes: its fractions and seed, and the files it carved."""
    return split_data(data, record.get("val_split"), record.get("test_split"), record.get("seed", 0),
                      record.get("carved"))


def stratified_pick(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `fraction` of each class's images, at least one per class."""
    picked = []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        picked.append(idx[:max(1, int(round(fraction * len(idx))))])
    return np.sort(np.concatenate(picked))


def _recorded_mask(files: list[str], recorded: list[str], split: str) -> np.ndarray:
    mask = np.isin(np.array(files, dtype=object), np.array(recorded, dtype=object))
    if mask.sum() != len(recorded):
        raise UserError(f"{len(recorded) - int(mask.sum())} of the {len(recorded)} images that the base run held "
                        f"out for {split} are no longer in the data: train the base model again on this data")
    return mask


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(m,) or (m, 1) integer labels to (m, num_classes) float32 one-hot rows."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels).reshape(-1)]


def preprocess_data(X: np.ndarray, Y: np.ndarray, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The original's helper (lilTinyNet.preprocess_data): (m, 32, 32, 3) uint8 images and (m,) or (m, 1) labels to what
    the saved model's evaluate() takes. The model scales and resizes images itself, so X only
    becomes a uint8 array; Y becomes one-hot."""
    return np.asarray(X, dtype=np.uint8), one_hot(Y, num_classes)
