"""Every data layout loads to the same shapes and labels; the validation split is stratified."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
from conftest import CLASSES, class_images, png_bytes, write_cifar_batches, write_image_tree, write_tarball
from PIL import Image

from tinynet.data import _list_files, decode_image, decode_jpegs, load_dataset, split_validation
from tinynet.errors import UserError


def test_image_folder_tree(tmp_path):
    write_image_tree(tmp_path / "tree", {"train": 4, "test": 2})
    data = load_dataset(str(tmp_path / "tree"), 64)
    assert data.class_names == CLASSES
    assert data.x_train.shape == (12, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (6, 32, 32, 3)
    assert sorted(np.bincount(data.y_train)) == [4, 4, 4]
    # labels follow the folder: class k was coloured in channel k
    assert all(data.x_train[data.y_train == k][..., k].mean() > 150 for k in range(3))


def test_image_tree_tarball_with_and_without_a_top_folder(tmp_path):
    tree = write_image_tree(tmp_path / "tree", {"train": 3, "test": 1})
    reference = load_dataset(str(tree), 64)
    for arcname in ("", "cifar10"):
        data = load_dataset(str(write_tarball(tree, tmp_path / f"t{arcname}.tar.gz", arcname)), 64)
        assert data.class_names == CLASSES
        np.testing.assert_array_equal(data.x_train, reference.x_train)
        np.testing.assert_array_equal(data.y_test, reference.y_test)


def test_an_uncompressed_tarball_loads_and_a_broken_one_is_refused(tmp_path):
    tree = write_image_tree(tmp_path / "tree", {"train": 3, "test": 1})
    with tarfile.open(tmp_path / "plain.tar", "w") as archive:
        archive.add(tree, arcname=".")
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "plain.tar"), 32).x_train,
                                  load_dataset(str(tree), 32).x_train)
    whole = write_tarball(tree, tmp_path / "t.tar.gz").read_bytes()
    broken = {"cut.tar.gz": whole[:len(whole) // 2], "text.tar.gz": b"not an archive",
              "noise.tar.gz": gzip.compress(b"")[:10] + b"\xff" * 300}  # a gzip header, then no valid block
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=f"{name} is neither a folder nor a readable .tar.gz"):
            load_dataset(str(tmp_path / name), 32)


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
    assert dict(_list_files(tmp_path / "t.tar.gz"))["./sparse.bin"]() == (folder / "sparse.bin").read_bytes()


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def test_jpegs_of_one_size_decode_in_batches_to_pils_pixels():
    images = [Image.fromarray(x) for x in [*class_images(0, 4), *class_images(1, 4)]]  # noise: every DCT detail shows
    contents = ([jpeg_bytes(image, quality=75) for image in images[:4]]
                + [jpeg_bytes(images[4].convert("L")), jpeg_bytes(images[5], progressive=True),
                   jpeg_bytes(images[6], subsampling=0), jpeg_bytes(images[7].convert("CMYK"))])
    np.testing.assert_array_equal(decode_jpegs(contents), np.stack([decode_image(data) for data in contents]))
    # anything else is left to PIL, image by image
    other_size = jpeg_bytes(Image.fromarray(class_images(0, 1, size=40)[0]))
    for odd_one in (other_size, png_bytes(class_images(0, 1)[0]), contents[0][:300]):
        assert decode_jpegs([*contents, odd_one]) is None


def test_official_batches_folder_and_tarball(tmp_path):
    folder, first_rows = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    expected_first = first_rows[0].reshape(3, 32, 32).transpose(1, 2, 0)
    for path in (folder, tmp_path, write_tarball(folder, tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")):
        data = load_dataset(str(path), 128)
        assert data.x_train.shape == (100, 32, 32, 3) and data.x_test.shape == (20, 32, 32, 3)
        assert data.class_names[0] == "airplane" and data.num_classes == 10
        np.testing.assert_array_equal(data.x_train[0], expected_first)


def test_mixed_sizes_and_modes_become_rgb_at_the_model_size(tmp_path):
    tree = write_image_tree(tmp_path / "tree", {"train": 2, "test": 1})
    gray = Image.fromarray(class_images(0, 1, size=48)[0]).convert("L")
    gray.save(tree / "train" / "cat" / "gray.png")
    Image.fromarray(class_images(1, 1, size=20)[0]).convert("RGBA").save(tree / "test" / "dog" / "rgba.png")
    data = load_dataset(str(tree), 40)
    assert data.x_train.shape == (7, 40, 40, 3) and data.x_test.shape == (4, 40, 40, 3)


def test_corrupt_images_are_skipped_with_a_warning(tmp_path):
    tree = write_image_tree(tmp_path / "tree", {"train": 60, "test": 40})
    (tree / "train" / "cat" / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image.*broken.jpg"):
        data = load_dataset(str(tree), 32)
    assert len(data.y_train) == 180


def test_too_many_corrupt_images_stop_the_run(tmp_path):
    tree = write_image_tree(tmp_path / "tree", {"train": 2, "test": 1})
    (tree / "train" / "cat" / "broken.png").write_bytes(png_bytes(class_images(0, 1)[0])[:40])
    with pytest.raises(UserError, match="unreadable"):
        load_dataset(str(tree), 32)


def test_unknown_layouts_and_mismatched_classes_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"), 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no known layout"):
        load_dataset(str(tmp_path / "empty"), 32)
    tree = write_image_tree(tmp_path / "tree", {"train": 2, "test": 1})
    shutil.rmtree(tree / "test" / "frog")
    with pytest.raises(UserError, match="differ"):
        load_dataset(str(tree), 32)


@pytest.mark.parametrize("val_split", [0.1, 0.25])
def test_validation_split_is_stratified_disjoint_and_seeded(val_split):
    labels = np.repeat(np.arange(4), [40, 80, 120, 160])
    train, val = split_validation(labels, val_split, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    counts = np.bincount(labels[val])
    np.testing.assert_array_equal(counts, np.round(val_split * np.bincount(labels)))
    again_train, again_val = split_validation(labels, val_split, seed=3)
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, split_validation(labels, val_split, seed=4)[1])
