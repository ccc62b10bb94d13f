"""The data layer: every layout from every kind of source loads the same; clutter, odd image files and
hostile archives are handled; validation and test sets are carved stratified, seeded and reproducibly."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, ROOT, class_images, png_bytes, write_cifar_batches, write_image_tree, write_tarball
from PIL import Image, features

from tinynet.data import (
    CIFAR10_URL,
    default_image_size,
    load_dataset,
    one_hot,
    split_data,
    stratified_pick,
)
from tinynet.errors import UserError
from tinynet.images import PAD_GREY, decode_image, decode_jpegs, square_image
from tinynet.sources import list_files

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# Helpers ----------------------------------------------------------------------------------------

def encoded(image: Image.Image | np.ndarray, fmt: str = "PNG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    return encoded(image, "JPEG", **options)


def solid(colour: tuple[int, ...], size: int = 8, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (size, size), colour)


def write_tree(root: Path, folders: dict[str, int], classes: list[str] = CLASSES, size: int = 8) -> Path:
    """root/<folder>/<class>/NNNN.png, class-coloured; folder "" puts the class folders at root.
    Each folder gets its own images, so a part loaded from the wrong folder shows."""
    for index, (folder, count) in enumerate(folders.items()):
        for label, name in enumerate(classes):
            target = root / folder / name
            target.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(class_images(label, count, size=size, seed=100 * index)):
                (target / f"{i:04d}.png").write_bytes(png_bytes(image))
    return root


def pack(tree: Path, where: Path, kind: str, top: str = "") -> Path:
    """The tree as a folder (wrapped in top/ when given), .tar, .tar.gz, .tgz or .zip (under top/)."""
    where.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        if not top:
            return tree
        shutil.copytree(tree, where / "wrapped" / top)
        return where / "wrapped"
    target = where / f"data.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(tree.rglob("*")):
                archive.write(path, "/".join(filter(None, [top, path.relative_to(tree).as_posix()])))
    else:
        with tarfile.open(target, "w" if kind == "tar" else "w:gz") as archive:
            archive.add(tree, arcname=top or ".")
    return target


def add_tar_member(archive: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
                   linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data)
    archive.addfile(info, io.BytesIO(data) if data else None)


def pixels_on_disk(root: Path, files: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(root / name).convert("RGB")) for name in files])


def one_line_user_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def all_paths(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def symlink_or_skip(target: Path, link: Path) -> None:
    try:
        os.symlink(target, link, target_is_directory=target.is_dir())
    except (OSError, NotImplementedError) as error:
        pytest.skip(f"no symbolic links here: {error}")


# Layouts ----------------------------------------------------------------------------------------

# name: (folders written with images per class, {part: folder it must come from})
LAYOUTS = {
    "train+test": ({"train": 3, "test": 2}, {"train": "train", "test": "test"}),
    "train+val": ({"train": 3, "val": 2}, {"train": "train", "test": "val"}),
    "train+valid": ({"train": 3, "valid": 2}, {"train": "train", "test": "valid"}),
    "Train+Validation": ({"Train": 3, "Validation": 2}, {"train": "Train", "test": "Validation"}),
    "train+val+test": ({"train": 3, "val": 2, "test": 2}, {"train": "train", "val": "val", "test": "test"}),
    "TRAIN+VAL+Test": ({"TRAIN": 3, "VAL": 2, "Test": 2}, {"train": "TRAIN", "val": "VAL", "test": "Test"}),
    "train only": ({"train": 4}, {"train": "train"}),
    "class folders": ({"": 4}, {"train": ""}),
}
SOURCES = [("folder", "top")] + [(kind, top) for kind in ("tar", "tar.gz", "tgz", "zip") for top in ("", "top")]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_loads_its_parts_from_the_right_folders(tmp_path, layout):
    folders, expected = LAYOUTS[layout]
    tree = write_tree(tmp_path / "tree", folders)
    data = load_dataset(str(tree), 8)
    assert data.class_names == CLASSES and data.num_classes == 3 and data.image_size == 8
    assert set(data.parts) == set(expected)
    for part, folder in expected.items():
        got = data.parts[part]
        prefix = f"{folder}/" if folder else ""
        per_class = folders[folder]
        assert got.files == [f"{prefix}{name}/{i:04d}.png" for name in CLASSES for i in range(per_class)]
        assert got.images.dtype == np.uint8 and got.images.shape == (3 * per_class, 8, 8, 3)
        np.testing.assert_array_equal(got.images, pixels_on_disk(tree, got.files))
        np.testing.assert_array_equal(got.labels, np.repeat(np.arange(3), per_class))


@pytest.mark.parametrize("kind,top", SOURCES, ids=[f"{kind}-{top or 'bare'}" for kind, top in SOURCES])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_loads_the_same_from_every_kind_of_source(tmp_path, layout, kind, top):
    tree = write_tree(tmp_path / "tree", LAYOUTS[layout][0])
    reference = load_dataset(str(tree), 8)
    data = load_dataset(str(pack(tree, tmp_path / "packed", kind, top)), 8)
    assert data.class_names == reference.class_names and set(data.parts) == set(reference.parts)
    assert data.layout == reference.layout
    for name, part in reference.parts.items():
        np.testing.assert_array_equal(data.parts[name].images, part.images)
        np.testing.assert_array_equal(data.parts[name].labels, part.labels)
        assert data.parts[name].files == [f"{top}/{file}" if top else file for file in part.files]


def test_an_uncompressed_tarball_loads(tmp_path):
    tree = write_image_tree(tmp_path / "tree", {"train": 3, "test": 1})
    with tarfile.open(tmp_path / "plain.tar", "w") as archive:
        archive.add(tree, arcname=".")
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "plain.tar"), 32).parts["train"].images,
                                  load_dataset(str(tree), 32).parts["train"].images)


BROKEN = [  # (file name, its bytes made from a good .tar.gz and a good .zip)
    pytest.param("cut.tar.gz", lambda whole, zipped: whole[:len(whole) // 2]),
    pytest.param("noise.tgz", lambda whole, zipped: gzip.compress(b"")[:10] + b"\xff" * 300),  # no valid block
    pytest.param("text.tar.gz", lambda whole, zipped: b"not an archive"),
    pytest.param("empty.tar", lambda whole, zipped: b""),
    pytest.param("cut.zip", lambda whole, zipped: zipped[:len(zipped) // 2]),
    pytest.param("photo.jpg", lambda whole, zipped: jpeg_bytes(solid(RED))),
]


def refusal(tmp_path: Path, name: str, content) -> UserError:
    tree = write_image_tree(tmp_path / "tree", {"train": 3, "test": 1})
    whole = write_tarball(tree, tmp_path / "t.tar.gz").read_bytes()
    (tmp_path / name).write_bytes(content(whole, pack(tree, tmp_path / "z", "zip").read_bytes()))
    with pytest.raises(UserError, match=f"{name} is neither a folder nor a readable .tar, .tar.gz, .tgz or .zip"
                       ) as excinfo:
        load_dataset(str(tmp_path / name), 32)
    return excinfo.value


@pytest.mark.parametrize("name,content", [param.values for param in BROKEN], ids=[p.values[0] for p in BROKEN])
def test_a_broken_archive_is_refused(tmp_path, name, content):
    assert str(tmp_path / name) in str(refusal(tmp_path, name, content))


@pytest.mark.parametrize("name,content", BROKEN, ids=[param.values[0] for param in BROKEN])
def test_the_refusal_of_a_broken_archive_is_one_line(tmp_path, name, content):
    assert "\n" not in str(refusal(tmp_path, name, content))


def test_a_damaged_zip_member_is_an_unreadable_image_not_a_crash(tmp_path):
    tree = write_tree(tmp_path / "tree", {"": 2})
    archive = bytearray(pack(tree, tmp_path / "z", "zip").read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(archive))) as opened:
        info = opened.getinfo("cat/0001.png")
    header = info.header_offset  # the local header: 30 bytes, then the name and extra field it gives
    start = header + 30 + int.from_bytes(archive[header + 26:header + 28], "little") + int.from_bytes(
        archive[header + 28:header + 30], "little")
    archive[start + info.compress_size // 2] ^= 0xFF  # a flipped byte in its compressed data
    (tmp_path / "damaged.zip").write_bytes(bytes(archive))
    with pytest.raises(UserError, match=r"1 of 6 images are unreadable .*cat/0001.png") as excinfo:
        load_dataset(str(tmp_path / "damaged.zip"), 8)
    one_line_user_error(excinfo)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write a sparse file")
def test_a_sparse_file_in_a_tarball_reads_whole(tmp_path):
    """Members are sliced from the archive in memory, but a sparse file is stored without its
    holes: its bytes must come back as they were written."""
    folder = tmp_path / "tree"
    folder.mkdir()
    with open(folder / "sparse.bin", "wb") as file:
        file.write(b"head")
        file.seek(1 << 20)  # a hole of zeros
        file.write(b"tail")
    subprocess.run(["tar", "--sparse", "-czf", str(tmp_path / "t.tar.gz"), "-C", str(folder), "."], check=True)
    with tarfile.open(tmp_path / "t.tar.gz") as archive:
        assert archive.getmember("./sparse.bin").issparse()
    files = dict(list_files(tmp_path / "t.tar.gz"))
    assert files["sparse.bin"]() == (folder / "sparse.bin").read_bytes()


def test_official_batches_folder_and_archives(tmp_path):
    folder, first_rows = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    expected_first = first_rows[0].reshape(3, 32, 32).transpose(1, 2, 0)
    sources = (folder, tmp_path, write_tarball(folder, tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py"),
               pack(folder, tmp_path / "z", "zip", "cifar-10-batches-py"))
    for path in sources:
        data = load_dataset(str(path))
        assert set(data.parts) == {"train", "test"} and data.image_size == 128
        assert data.parts["train"].images.shape == (100, 32, 32, 3)
        assert data.parts["test"].images.shape == (20, 32, 32, 3)
        assert data.class_names[0] == "airplane" and data.num_classes == 10
        np.testing.assert_array_equal(data.parts["train"].images[0], expected_first)
        assert data.parts["train"].labels.shape == (100,) and data.parts["train"].labels.max() <= 9


# Splits -----------------------------------------------------------------------------------------

def test_split_data_carves_test_then_val_stratified_seeded_and_disjoint(tmp_path):
    tree = write_tree(tmp_path / "tree", {"": 10})
    data = load_dataset(str(tree), 8)
    train = data.parts["train"]
    splits = split_data(data, 0.1, 0.2, seed=5)
    assert set(splits.carved) == {"val", "test"}
    counts = {split: np.bincount(labels, minlength=3).tolist() for split, labels in splits.labels.items()}
    assert counts == {"train": [7, 7, 7], "val": [1, 1, 1], "test": [2, 2, 2]}
    val, test = splits.carved["val"], splits.carved["test"]
    assert not set(val) & set(test) and set(val) | set(test) <= set(train.files)
    for split in ("val", "test"):  # each carved file's pixels and label are where the list says
        index = [train.files.index(file) for file in splits.carved[split]]
        np.testing.assert_array_equal(splits.images[split], train.images[index])
        np.testing.assert_array_equal(splits.labels[split], train.labels[index])
    kept = [i for i, file in enumerate(train.files) if file not in set(val) | set(test)]
    np.testing.assert_array_equal(splits.images["train"], train.images[kept])
    assert split_data(data, 0.1, 0.2, seed=5).carved == splits.carved
    assert split_data(data, 0.1, 0.2, seed=6).carved != splits.carved


def test_a_recorded_split_is_reproduced_and_a_vanished_file_refused(tmp_path):
    tree = write_tree(tmp_path / "tree", {"": 10})
    splits = split_data(load_dataset(str(tree), 8), 0.1, 0.2, seed=5)
    again = split_data(load_dataset(str(tree), 8), 0.3, 0.3, seed=99, recorded=splits.carved)
    assert again.carved == splits.carved
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(again.images[split], splits.images[split])
        np.testing.assert_array_equal(again.labels[split], splits.labels[split])
    (tree / splits.carved["test"][0]).unlink()
    with pytest.raises(UserError, match="1 of the 6 images .* held out for test are no longer in the data") as excinfo:
        split_data(load_dataset(str(tree), 8), 0.1, 0.2, seed=5, recorded=splits.carved)
    one_line_user_error(excinfo)


def test_split_data_takes_the_parts_a_layout_gives(tmp_path):
    data = load_dataset(str(write_tree(tmp_path / "a", {"train": 10, "test": 2})), 8)
    splits = split_data(data, 0.1, 0.5, seed=1)
    assert set(splits.carved) == {"val"} and len(splits.carved["val"]) == 3
    np.testing.assert_array_equal(splits.images["test"], data.parts["test"].images)
    assert len(splits.labels["train"]) == 27
    data = load_dataset(str(write_tree(tmp_path / "b", {"train": 4, "val": 2, "test": 1})), 8)
    splits = split_data(data, 0.1, 0.5, seed=1)
    assert splits.carved == {}
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(splits.images[split], data.parts[split].images)


def test_split_data_carves_from_the_official_batches_without_files(tmp_path):
    folder, _ = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    data = load_dataset(str(folder), 32)
    splits = split_data(data, 0.2, 0.1, seed=0)
    assert splits.carved == {} and len(splits.labels["test"]) == 20
    assert len(splits.labels["train"]) + len(splits.labels["val"]) == 100 and len(splits.labels["val"]) >= 10


@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_stratified_pick_takes_each_classes_share_seeded(fraction):
    labels = np.repeat(np.arange(5), [40, 80, 120, 160, 2])
    picked = stratified_pick(labels, fraction, np.random.default_rng(3))
    assert len(np.unique(picked)) == len(picked) and np.all(np.diff(picked) > 0)
    expected = np.maximum(1, np.round(fraction * np.bincount(labels)))  # at least one of each class
    np.testing.assert_array_equal(np.bincount(labels[picked]), expected)
    np.testing.assert_array_equal(picked, stratified_pick(labels, fraction, np.random.default_rng(3)))
    assert not np.array_equal(picked, stratified_pick(labels, fraction, np.random.default_rng(4)))


def test_one_hot_rows():
    np.testing.assert_array_equal(one_hot(np.array([[2], [0]]), 3), [[0, 0, 1], [1, 0, 0]])
    assert one_hot(np.array([1]), 4).dtype == np.float32


# Clutter, stray files, symbolic links -----------------------------------------------------------

def add_clutter(tree: Path) -> None:
    """What macOS, Windows and tools leave beside images, some of it with an image's extension."""
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 60
    for folder in (tree, tree / "train", tree / "train" / "cat", tree / "test" / "dog"):
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 40)
    (tree / "train" / "cat" / "._0000.png").write_bytes(apple_double)
    (tree / "test" / "dog" / "._photo.jpg").write_bytes(apple_double)
    (tree / "train" / "dog" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 40)
    (tree / "test" / "frog" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    for hidden in (tree / "__MACOSX" / "train" / "cat", tree / ".hidden" / "cat", tree / "train" / "frog" / ".cache"):
        hidden.mkdir(parents=True)
        (hidden / "._0001.png").write_bytes(apple_double)
        (hidden / "0002.jpg").write_bytes(b"not even an image")


@pytest.mark.parametrize("kind", ["folder", "zip", "tar.gz"])
def test_os_clutter_is_ignored_silently(tmp_path, kind, capsys):
    clean = write_tree(tmp_path / "clean", {"train": 2, "test": 1})
    reference = load_dataset(str(clean), 8)
    cluttered = shutil.copytree(clean, tmp_path / "cluttered")
    add_clutter(cluttered)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a piece of clutter taken for a broken image would warn
        data = load_dataset(str(pack(cluttered, tmp_path / "packed", kind)), 8)
    assert "note:" not in capsys.readouterr().out
    assert set(data.parts) == set(reference.parts)
    for name, part in reference.parts.items():
        assert data.parts[name].files == part.files
        np.testing.assert_array_equal(data.parts[name].images, part.images)


def test_files_that_are_not_images_in_class_folders_are_skipped_with_a_note(tmp_path, capsys):
    tree = write_tree(tmp_path / "tree", {"train": 2, "test": 1})
    (tree / "README.txt").write_text("my data")
    (tree / "train" / "cat" / "labels.csv").write_text("a,b\n")
    (tree / "cover.png").write_bytes(png_bytes(class_images(0, 1, size=8)[0]))  # an image, but in no class folder
    data = load_dataset(str(tree), 8)
    out = capsys.readouterr().out
    assert "note: skipped 3 file(s) that are not images in class folders" in out
    assert all(name in out for name in ("README.txt", "train/cat/labels.csv", "cover.png"))
    assert len(data.parts["train"].labels) == 6 and len(data.parts["test"].labels) == 3


def test_symbolic_links_to_folders_and_files_are_followed(tmp_path):
    store = write_tree(tmp_path / "store", {"train": 2, "test": 1})
    tree = tmp_path / "tree"
    (tree / "train").mkdir(parents=True)
    symlink_or_skip(store / "train" / "cat", tree / "train" / "cat")  # a folder
    symlink_or_skip(store / "test", tree / "test")
    for name in ("dog", "frog"):
        (tree / "train" / name).mkdir()
        for file in sorted((store / "train" / name).iterdir()):
            symlink_or_skip(file, tree / "train" / name / file.name)  # each file
    symlink_or_skip(tree / "train", tree / "train" / "dog" / "loop")  # a loop must not hang the walk
    symlink_or_skip(tree, tmp_path / "link-to-tree")  # --data-dir itself a link
    reference = load_dataset(str(store), 8)
    for source in (tree, tmp_path / "link-to-tree"):
        data = load_dataset(str(source), 8)
        for name, part in reference.parts.items():
            assert data.parts[name].files == part.files
            np.testing.assert_array_equal(data.parts[name].images, part.images)


def test_a_dangling_symbolic_link_is_an_unreadable_image_not_a_crash(tmp_path):
    tree = write_tree(tmp_path / "tree", {"": 2})
    symlink_or_skip(tmp_path / "gone.png", tree / "cat" / "gone.png")
    with pytest.raises(UserError, match="unreadable.*gone.png"):
        load_dataset(str(tree), 8)


def test_a_tar_symlink_that_stays_inside_the_archive_is_not_refused(tmp_path):
    with tarfile.open(tmp_path / "t.tar", "w") as archive:
        for label, name in enumerate(CLASSES):
            for i in range(2):
                add_tar_member(archive, f"{name}/{i:04d}.png", png_bytes(class_images(label, 1, size=8)[0]))
        add_tar_member(archive, "cat/link.png", kind=tarfile.SYMTYPE, linkname="../dog/0000.png")
    data = load_dataset(str(tmp_path / "t.tar"), 8)
    assert len(data.parts["train"].labels) >= 6


# Image files ------------------------------------------------------------------------------------

def test_image_extensions_in_any_case_and_a_gifs_first_frame(tmp_path):
    if not features.check("webp"):
        pytest.skip("this Pillow has no WebP")
    files = {
        "red/a.JPG": jpeg_bytes(solid(RED), quality=95), "red/b.jpeg": jpeg_bytes(solid(RED), quality=95),
        "red/c.Jpg": jpeg_bytes(solid(RED), quality=95),
        "green/d.PNG": encoded(solid(GREEN)), "green/e.bmp": encoded(solid(GREEN), "BMP"),
        "green/f.gif": encoded(solid(GREEN), "GIF", save_all=True, append_images=[solid(RED), solid(BLUE)]),
        "blue/g.webp": encoded(solid(BLUE), "WEBP", lossless=True), "blue/h.WEBP": encoded(solid(BLUE), "WEBP"),
        "blue/i.Gif": encoded(solid(BLUE), "GIF"),
    }
    for name, content in files.items():
        (tmp_path / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / name).write_bytes(content)
    data = load_dataset(str(tmp_path / "tree"), 8)
    train = data.parts["train"]
    assert data.class_names == ["blue", "green", "red"] and len(train.files) == len(files)
    colours = {"red": RED, "green": GREEN, "blue": BLUE}
    for file, image, label in zip(train.files, train.images, train.labels, strict=True):
        assert data.class_names[label] == file.split("/")[0]
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), colours[file.split("/")[0]], atol=12, err_msg=file)


def halves(first: tuple[int, int, int], second: tuple[int, int, int], width: int = 16, height: int = 16) -> np.ndarray:
    """Left half `first`, right half `second`."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, :width // 2], array[:, width // 2:] = first, second
    return array


def exif_jpeg(array: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(Image.fromarray(array), exif=exif, quality=95, subsampling=0)


def assert_colour(region: np.ndarray, colour: tuple[int, int, int]) -> None:
    np.testing.assert_allclose(region.reshape(-1, 3).mean(0), colour, atol=12)


def test_exif_orientation_is_applied_and_the_jpeg_fast_path_steps_aside(tmp_path):
    # stored wide, left red and right blue; shown rotated 90 degrees: clockwise (6), anticlockwise (8)
    wide = exif_jpeg(halves(RED, BLUE, width=32, height=16), 6)
    image = decode_image(wide)
    assert image.shape == (32, 16, 3)  # upright: tall
    assert_colour(image[2:14], RED)  # the left half went to the top
    assert_colour(image[18:30], BLUE)
    # square JPEGs of one size would go to TensorFlow, which ignores EXIF: they must not
    square = {6: exif_jpeg(halves(RED, BLUE), 6), 8: exif_jpeg(halves(RED, BLUE), 8)}
    assert decode_jpegs(list(square.values()), 32) is None
    assert decode_jpegs([jpeg_bytes(Image.fromarray(halves(RED, BLUE)))], 32) is not None
    for name, orientation in (("cw", 6), ("ccw", 8)):
        for i in range(2):
            (tmp_path / "tree" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "tree" / name / f"{i}.jpg").write_bytes(square[orientation])
    data = load_dataset(str(tmp_path / "tree"), 16)
    train = data.parts["train"]
    for image, label in zip(train.images, train.labels, strict=True):
        top, bottom = (RED, BLUE) if data.class_names[label] == "cw" else (BLUE, RED)
        assert_colour(image[1:7], top)
        assert_colour(image[9:15], bottom)


def mode_images() -> dict[str, tuple[bytes, dict[tuple[int, int], tuple[int, int, int]]]]:
    """Name: (file bytes, {(row, column): the RGB colour expected there})."""
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (4, 0, 8, 8))  # right half index 1, transparent
    rgba = np.zeros((8, 8, 4), np.uint8)  # left half fully transparent black
    rgba[:, 4:] = (0, 255, 0, 255)
    la = np.zeros((8, 8, 2), np.uint8)
    la[:, 4:] = (100, 255)
    la[:, :4] = (30, 0)
    deep = np.zeros((8, 8), np.uint16)
    deep[:, 4:] = 65535
    deep[4:, :4] = 257 * 100
    grey = np.full((8, 8), 77, np.uint8)
    return {
        "palette.png": (encoded(palette, transparency=1), {(0, 0): RED, (0, 7): WHITE}),
        "rgba.png": (encoded(Image.fromarray(rgba, "RGBA")), {(0, 0): WHITE, (0, 7): GREEN}),
        "la.png": (encoded(Image.fromarray(la, "LA")), {(0, 0): WHITE, (0, 7): (100, 100, 100)}),
        "cmyk.jpg": (jpeg_bytes(solid((0, 255, 255, 0), mode="CMYK"), quality=95), {(3, 3): RED}),
        "deep.png": (encoded(Image.fromarray(deep)), {(0, 0): (0, 0, 0), (0, 7): WHITE, (7, 0): (100, 100, 100)}),
        "grey.png": (encoded(Image.fromarray(grey)), {(0, 0): (77, 77, 77)}),
    }


def test_every_image_mode_becomes_rgb_uint8(tmp_path):
    modes = mode_images()
    assert Image.open(io.BytesIO(modes["deep.png"][0])).mode.startswith("I")  # 16 bits survived saving
    for name, (content, _) in modes.items():
        for folder in ("cat", "dog"):
            (tmp_path / "tree" / folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / "tree" / folder / name).write_bytes(content)
    train = load_dataset(str(tmp_path / "tree"), 8).parts["train"]
    assert train.images.shape == (12, 8, 8, 3) and train.images.dtype == np.uint8
    images = dict(zip(train.files, train.images, strict=True))
    for name, (content, colours) in modes.items():
        for image in (images[f"cat/{name}"], decode_image(content)):
            assert image.shape == (8, 8, 3) and image.dtype == np.uint8
            for (row, column), colour in colours.items():
                np.testing.assert_allclose(image[row, column], colour, atol=3, err_msg=name)


def test_mixed_sizes_and_modes_become_rgb_at_the_model_size(tmp_path):
    tree = write_image_tree(tmp_path / "tree", {"train": 2, "test": 1})
    gray = Image.fromarray(class_images(0, 1, size=48)[0]).convert("L")
    gray.save(tree / "train" / "cat" / "gray.png")
    Image.fromarray(class_images(1, 1, size=20)[0]).convert("RGBA").save(tree / "test" / "dog" / "rgba.png")
    data = load_dataset(str(tree), 40)
    assert data.parts["train"].images.shape == (7, 40, 40, 3) and data.parts["test"].images.shape == (4, 40, 40, 3)


def test_square_methods_crop_pad_and_stretch():
    wide = np.zeros((16, 48, 3), np.uint8)
    wide[:, :16], wide[:, 16:32], wide[:, 32:] = GREEN, RED, GREEN  # a red centre between green thirds
    data = png_bytes(wide)
    crop, pad, stretch = (decode_image(data, 16, method) for method in ("crop", "pad", "stretch"))
    assert crop.shape == pad.shape == stretch.shape == (16, 16, 3)
    assert_colour(crop, RED)
    assert crop[..., 1].max() < 10  # nothing of the green sides
    assert (pad[0] == PAD_GREY).all() and (pad[-1] == PAD_GREY).all()  # grey bands above and below
    np.testing.assert_allclose(pad[8, 1], GREEN, atol=10)
    np.testing.assert_allclose(pad[8, 8], RED, atol=10)
    for column, colour in ((0, GREEN), (8, RED), (15, GREEN)):
        np.testing.assert_allclose(stretch[8, column], colour, atol=10)
    tall = decode_image(png_bytes(np.ascontiguousarray(wide.transpose(1, 0, 2))), 16, "crop")
    assert_colour(tall, RED)
    # a square no larger than the model's input is kept as it is; a larger one comes down to it
    assert decode_image(png_bytes(wide[:, :16]), 32).shape == (16, 16, 3)
    assert decode_image(png_bytes(np.zeros((40, 40, 3), np.uint8)), 32).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="unknown square method"):
        square_image(Image.fromarray(wide), 16, "zoom")
    with pytest.raises(ValueError, match="unknown square method"):
        load_dataset("unused", 16, square="zoom")


def test_jpegs_of_one_size_decode_in_batches_to_pils_pixels():
    images = [Image.fromarray(x) for x in [*class_images(0, 4), *class_images(1, 4)]]  # noise: every DCT detail shows
    contents = ([jpeg_bytes(image, quality=75) for image in images[:4]]
                + [jpeg_bytes(images[4].convert("L")), jpeg_bytes(images[5], progressive=True),
                   jpeg_bytes(images[6], subsampling=0), jpeg_bytes(images[7].convert("CMYK"))])
    np.testing.assert_array_equal(decode_jpegs(contents, 32), np.stack([decode_image(data) for data in contents]))
    # anything else is left to PIL, image by image
    other_size = jpeg_bytes(Image.fromarray(class_images(0, 1, size=40)[0]))
    wide = jpeg_bytes(Image.fromarray(class_images(0, 1, size=40)[0][:32]))
    for odd_one in (other_size, png_bytes(class_images(0, 1)[0]), contents[0][:300]):
        assert decode_jpegs([*contents, odd_one], 32) is None
    assert decode_jpegs([wide], 64) is None  # not square
    assert decode_jpegs(contents, 16) is None  # larger than the model's input
    assert decode_jpegs([], 32) is None


def test_corrupt_images_are_skipped_with_a_warning(tmp_path, monkeypatch):
    # one decoding thread: with more, the warning is lost half the time (the bug of the test below)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    tree = write_image_tree(tmp_path / "tree", {"train": 60, "test": 40})
    (tree / "train" / "cat" / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image.*broken.jpg"):
        data = load_dataset(str(tree), 32)
    assert len(data.parts["train"].labels) == 180 and "train/cat/broken.jpg" not in data.parts["train"].files


def test_decoding_in_threads_leaves_the_warning_filters_as_they_were(monkeypatch):
    """Two decode_image calls overlapping as they do in the thread pool, in the order that shows the
    race every time: a enters, b enters, a leaves, b leaves."""
    opened, a_in, b_in, a_done = Image.open, threading.Event(), threading.Event(), threading.Event()

    def paused_open(*args, **kwargs):
        if threading.current_thread().name == "a":
            a_in.set()
            b_in.wait(2)  # timeouts: a decoder that serialises its calls must not hang here
        else:
            b_in.set()
            a_done.wait(2)
        return opened(*args, **kwargs)

    def run_a():
        decode_image(content)
        a_done.set()

    def run_b():
        a_in.wait(2)
        decode_image(content)

    monkeypatch.setattr(Image, "open", paused_open)
    content = png_bytes(class_images(0, 1, size=8)[0])
    before = list(warnings.filters)
    threads = [threading.Thread(target=run_a, name="a"), threading.Thread(target=run_b, name="b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert a_done.is_set() and b_in.is_set()  # both decoded, overlapping
    assert warnings.filters == before


def test_too_many_corrupt_images_stop_the_run(tmp_path):
    tree = write_image_tree(tmp_path / "tree", {"train": 2, "test": 1})
    (tree / "train" / "cat" / "broken.png").write_bytes(png_bytes(class_images(0, 1)[0])[:40])
    with pytest.raises(UserError, match="1 of 10 images are unreadable.*broken.png") as excinfo:
        load_dataset(str(tree), 32)
    one_line_user_error(excinfo)


def test_unknown_layouts_and_mismatched_classes_are_user_errors(tmp_path):
    cases = {}
    cases["does not exist"] = tmp_path / "missing"
    (tmp_path / "empty").mkdir()
    cases["no known layout .found no images in class folders"] = tmp_path / "empty"
    tree = write_tree(tmp_path / "mismatch", {"train": 2, "test": 1})
    shutil.rmtree(tree / "test" / "frog")
    cases[r"test/ classes \['cat', 'dog'\] differ from train classes"] = tree
    cases["no known layout .found folders extra, train"] = write_tree(tmp_path / "extra", {"train": 1, "extra": 1})
    cases["no known layout .found folders train, val, valid"] = write_tree(
        tmp_path / "twice", {"train": 1, "val": 1, "valid": 1})
    cases["no known layout .found folders test"] = write_tree(tmp_path / "no-train", {"test": 1})
    cases["has 1 class folder; a classifier needs two or more"] = write_tree(
        tmp_path / "one", {"train": 2, "test": 1}, ["cat"])
    # a lone class folder at the top looks like a folder around loose images
    cases["no known layout .found no images in class folders"] = write_tree(tmp_path / "lone", {"": 2}, ["cat"])
    tree = write_tree(tmp_path / "empty-class", {"train": 2, "test": 1})
    for file in (tree / "test" / "dog").iterdir():
        file.unlink()
    cases["class folder test/dog has no images"] = tree
    for match, path in cases.items():
        with pytest.raises(UserError, match=match) as excinfo:
            load_dataset(str(path), 8)
        one_line_user_error(excinfo)


# Hostile archives -------------------------------------------------------------------------------

def hostile_tar(target: Path, name: str, kind: bytes, linkname: str = "") -> None:
    with tarfile.open(target, "w:gz" if target.name.endswith("gz") else "w") as archive:
        for label, folder in enumerate(("cat", "dog")):
            add_tar_member(archive, f"{folder}/0.png", png_bytes(class_images(label, 1, size=8)[0]))
        add_tar_member(archive, name, b"" if linkname else jpeg_bytes(solid(RED)), kind, linkname)


def hostile_zip(target: Path, name: str) -> None:
    with zipfile.ZipFile(target, "w") as archive:
        for label, folder in enumerate(("cat", "dog")):
            archive.writestr(f"{folder}/0.png", png_bytes(class_images(label, 1, size=8)[0]))
        archive.writestr(zipfile.ZipInfo(name), jpeg_bytes(solid(RED)))


HOSTILE = {
    "tar-parent": lambda target: hostile_tar(target.with_suffix(".tar"), "../evil.jpg", tarfile.REGTYPE),
    "tar-deep-parent": lambda target: hostile_tar(target.with_suffix(".tgz"), "cat/../../evil.jpg", tarfile.REGTYPE),
    "tar-absolute": lambda target: hostile_tar(target.with_suffix(".tar"), "/abs/evil.jpg", tarfile.REGTYPE),
    "tar-symlink": lambda target: hostile_tar(target.with_suffix(".tar"), "cat/evil.jpg", tarfile.SYMTYPE,
                                              "../../etc/passwd"),
    "tar-absolute-symlink": lambda target: hostile_tar(target.with_suffix(".tar"), "cat/evil.jpg", tarfile.SYMTYPE,
                                                       "/etc/passwd"),
    "tar-hardlink": lambda target: hostile_tar(target.with_suffix(".tar"), "cat/evil.jpg", tarfile.LNKTYPE,
                                               "../../etc/passwd"),
    "zip-parent": lambda target: hostile_zip(target.with_suffix(".zip"), "../evil.jpg"),
    "zip-backslash": lambda target: hostile_zip(target.with_suffix(".zip"), "..\\evil.jpg"),
    "zip-absolute": lambda target: hostile_zip(target.with_suffix(".zip"), "/abs/evil.jpg"),
    "zip-drive": lambda target: hostile_zip(target.with_suffix(".zip"), "C:/evil.jpg"),
}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_member_pointing_outside_the_archive_is_refused_and_nothing_is_written(tmp_path, monkeypatch, hostile):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    HOSTILE[hostile](work / "data")
    (archive,) = work.iterdir()
    before = all_paths(tmp_path)
    with pytest.raises(UserError, match="points outside the archive") as excinfo:
        load_dataset(str(archive), 8)
    assert str(archive) in one_line_user_error(excinfo)
    assert all_paths(tmp_path) == before and not Path("/abs").exists()


# Sizes and the Keras download -------------------------------------------------------------------

def test_default_image_size_is_4x_small_images_in_steps_of_32_from_96_and_224_for_photos(tmp_path):
    assert default_image_size([(32, 32)]) == 128  # CIFAR-10, as the original upscaled it
    assert default_image_size([(48, 48)]) == 192
    assert default_image_size([(300, 400), (400, 300)]) == 224
    assert default_image_size([(8, 8)]) == 96 and default_image_size([(1, 5)]) == 96  # never below 96
    assert default_image_size([(16, 16)]) == 96 and default_image_size([(24, 24)]) == 96  # 64, 96: the floor
    assert default_image_size([(40, 40)]) == 160 and default_image_size([(50, 50)]) == 192  # 200: nearest step
    assert default_image_size([(32, 32), (32, 32), (300, 300)]) == 128  # the median, not the mean
    assert load_dataset(str(write_tree(tmp_path / "small", {"": 2}, size=32))).image_size == 128
    data = load_dataset(str(write_tree(tmp_path / "medium", {"": 2}, size=48)))
    assert data.image_size == 192 and data.parts["train"].images.shape == (6, 48, 48, 3)  # kept: the model resizes
    photos = tmp_path / "photos"
    for name in ("a", "b"):
        (photos / name).mkdir(parents=True)
        (photos / name / "1.jpg").write_bytes(jpeg_bytes(Image.new("RGB", (40, 30), RED)))  # 4 x 30 = 120
    data = load_dataset(str(photos))
    assert data.image_size == 128 and data.parts["train"].images.shape == (2, 128, 128, 3)


def test_without_a_network_the_keras_download_is_a_user_error_naming_the_way_out(tmp_path):
    """The real download, through a proxy on a port that refuses connections: it fails at once."""
    code = ("from tinynet.data import load_dataset\nfrom tinynet.errors import UserError\n"
            "try:\n    load_dataset(None)\nexcept UserError as error:\n    print('UserError:', error)\n")
    refused = "http://127.0.0.1:9"
    env = {name: value for name, value in os.environ.items() if name.lower() != "no_proxy"}
    env.update(KERAS_HOME=str(tmp_path / "keras"), PYTHONPATH=str(ROOT), HTTPS_PROXY=refused, https_proxy=refused,
               HTTP_PROXY=refused, http_proxy=refused, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    lines = [line for line in result.stdout.splitlines() if line.startswith("UserError:")]
    assert result.returncode == 0 and len(lines) == 1, result.stdout + result.stderr[-2000:]
    assert CIFAR10_URL in lines[0] and "--data-dir" in lines[0]
    assert not list((tmp_path / "keras").rglob("cifar-10-batches-py/*"))  # nothing was fetched
