"""Real photo sets for the bench, rebuilt from public GitHub repositories at pinned commits.

    python -m bench.photo_sets --out /work/data/photo_sets
    python -m bench.photo_sets --out /work/data/photo_sets --only hymenoptera food5
    python -m bench.photo_sets --out /work/data/photo_sets --mirror-dir /work/.mirror

Each set becomes <out>/<name>/train/<class>/<file> and <out>/<name>/test/<class>/<file>, with
every file's bytes as the repository holds them (nothing re-encoded), and <out>/<name>/manifest.json
saying where each file came from. Files are read with git from a local mirror when one holds the
pinned commit (<mirror-dir>/<owner>+<repo>/repo, bare or holding .git), else from a partial
clone of https://github.com/<owner>/<repo> kept in --cache-dir (blobs fetched for the set's paths only).

The choice of files is deterministic: a class's candidates are the image files under its folder
(by extension, as the kit reads them) sorted by path, less any of 4 MiB or more (a snapshot
lacks them, so a clone and a snapshot pick the same files); files with the same bytes as
another are dropped (all copies when they sit in different classes), so no image is in both
train and test; a cap keeps evenly spaced ones (every k-th); where the source has no held-out
split, every fourth kept file (positions 3, 7, 11, ...) goes to test. A file PIL cannot decode,
or a Git LFS pointer, is skipped and reported.
The counts per class and split are then checked against the record: any difference fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import os
import posixpath
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

# The kit's own list (tinynet/images.py), repeated so this script needs no TensorFlow.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
MAX_BYTES = 4 * 1024 * 1024  # snapshots lack files this large: leave them out everywhere
LFS_MAGIC = b"version https://git-lfs"
MIRROR_DIR = Path("/work/.mirror")
CACHE_DIR = Path.home() / ".cache" / "liltinynet" / "photo_sets"
GIT_BASE_URL = "https://github.com"

Files = list[tuple[str, str, int]]  # (path in the repository, blob id, size in bytes)


@dataclass(frozen=True)
class Pick:
    """The files of one class in one split: a glob over repository paths (fnmatch), a cap, and
    optionally a list file in the repository naming the members (one line each, as 'class/stem',
    relative to list_root and without extension)."""

    glob: str
    cap: int | None = None
    listed_in: str | None = None
    list_root: str = ""


@dataclass(frozen=True)
class ClassSpec:
    """One output class: where its training files come from, and its test files (None: carved
    from the training pick, every fourth kept file)."""

    name: str
    train: Pick
    test: Pick | None
    expect: tuple[int, int]  # (train, test) after caps, splits and skipped files


@dataclass(frozen=True)
class PhotoSet:
    name: str
    kind: str
    repo: str  # owner/name on GitHub
    commit: str
    paths: tuple[str, ...]  # the folders and files read inside the repository
    licence: str  # the repository's, and the data's as the repository states it
    source: str  # where the images first came from
    split: str  # the rule, in words
    classes: tuple[ClassSpec, ...]
    notes: str = ""
    # Near-copies (resized or re-encoded, so not caught by their bytes) left out by path: found once
    # with a 16x16 difference hash (5 or fewer of 256 bits apart), keeping the first of each group in
    # class, split and path order and none of a group spread over classes; listed so the build needs
    # no perceptual hashing, whose bits could move with the PIL version.
    exclude: tuple[str, ...] = ()

    def expected(self) -> dict[str, dict[str, int]]:
        return {
            "train": {c.name: c.expect[0] for c in self.classes},
            "test": {c.name: c.expect[1] for c in self.classes},
        }


def numbered(template: str, numbers: str) -> tuple[str, ...]:
    """Paths from a template with one {} and the numbers that fill it, to keep long lists short."""
    return tuple(template.format(n) for n in numbers.split())


def carve(cls: str, folder: str, cap: int | None, expect: tuple[int, int], pattern: str = "*") -> ClassSpec:
    """A class with no held-out split in its source: test is carved from the kept files."""
    return ClassSpec(cls, Pick(f"{folder}/{pattern}", cap), None, expect)


def held_out(
    cls: str, train: str, test: str, expect: tuple[int, int], caps: tuple[int | None, int | None] = (None, None)
) -> ClassSpec:
    """A class whose source has its own training and test (or validation) folders."""
    return ClassSpec(cls, Pick(f"{train}/*", caps[0]), Pick(f"{test}/*", caps[1]), expect)


CARVE_RULE = (
    "no held-out split in the source: per class, candidates sorted by path, a cap keeps evenly spaced ones "
    "(index i*n//cap), then every fourth kept file (positions 3, 7, 11, ...) is test, the rest train"
)
FOOD_CLASSES = ("apple_pie", "baby_back_ribs", "beet_salad", "beignets", "bibimbap")

SETS: dict[str, PhotoSet] = {
    s.name: s
    for s in (
        PhotoSet(
            name="hymenoptera",
            kind="two-class (insects: ants and bees)",
            repo="zhangtao7750/syn",
            commit="f0503091488f67b6809a6da2eaa43c25f2f277fc",
            paths=("hymenoptera_data",),
            licence="repository: no licence file or statement; data: the PyTorch transfer-learning tutorial's "
            "hymenoptera_data, a small ImageNet subset: licence unclear (ImageNet images belong to their owners)",
            source="https://download.pytorch.org/tutorial/hymenoptera_data.zip (PyTorch tutorials)",
            split="the source's own train/ and val/ folders, val/ used as test; no caps",
            classes=(
                held_out("ants", "hymenoptera_data/train/ants", "hymenoptera_data/val/ants", (124, 70)),
                held_out("bees", "hymenoptera_data/train/bees", "hymenoptera_data/val/bees", (121, 83)),
            ),
        ),
        PhotoSet(
            name="trashnet",
            kind="products/objects (recyclable waste on a white board)",
            repo="congduytran12/Trash-Classification-",
            commit="00212f2c18dcdb9045c74481eaae5baaf72537df",
            paths=("dataset-resized",),
            licence="repository: no licence file; data: TrashNet by Gary Thung and Mindy Yang, MIT licence "
            "(github.com/garythung/trashnet, LICENSE); this copy is TrashNet's dataset-resized (512x384)",
            source="https://github.com/garythung/trashnet (data/dataset-resized.zip)",
            split=CARVE_RULE + "; cap 120 per class",
            classes=tuple(
                carve(c, f"dataset-resized/{c}", 120, (90, 30))
                for c in ("cardboard", "glass", "metal", "paper", "plastic", "trash")
            ),
        ),
        PhotoSet(
            name="rsscn7",
            kind="aerial/satellite scenes",
            repo="palewithout/RSSCN7",
            commit="6d77849df87d242b323184ab096e44dd63730c7e",
            paths=("aGrass", "bField", "cIndustry", "dRiverLake", "eForest", "fResident", "gParking"),
            licence="repository: no licence file (README only cites the paper); data: RSSCN7 (Zou et al., "
            "'Deep Learning Based Feature Selection for Remote Sensing Scene Classification', IEEE GRSL 2015): "
            "no licence stated, research use assumed: unclear",
            source="RSSCN7, Zou, Ni, Zhang and Wang, IEEE GRSL 12(11), 2015",
            split=CARVE_RULE + "; cap 80 per class (of 400)",
            classes=tuple(
                carve(out, folder, 80, (60, 20))
                for out, folder in (
                    ("grass", "aGrass"),
                    ("field", "bField"),
                    ("industry", "cIndustry"),
                    ("river_lake", "dRiverLake"),
                    ("forest", "eForest"),
                    ("residential", "fResident"),
                    ("parking", "gParking"),
                )
            ),
        ),
        PhotoSet(
            name="brain_mri",
            kind="medical (brain MRI slices, tumour or not)",
            repo="MohamedAliHabib/Brain-Tumor-Detection",
            commit="30470ae8eb2e4a523df7dc45dd5323903cb98365",
            paths=("yes", "no"),
            licence="repository: Apache-2.0 (LICENSE); data: Kaggle 'Brain MRI Images for Brain Tumor Detection' "
            "(navoneel), no licence stated there: unclear",
            source="https://www.kaggle.com/navoneel/brain-mri-images-for-brain-tumor-detection",
            split=CARVE_RULE + "; no cap: the 253 originals less 41 exact or near copies (not 'augmented data')",
            classes=(
                carve("tumor", "yes", None, (100, 33)),
                carve("no_tumor", "no", None, (60, 19)),
            ),
            notes="greyscale content (stored as RGB, L, RGBA or P); sizes vary widely; .jpg, .JPG, .jpeg, .png",
            exclude=numbered("no/{}", "N17.jpg N3.jpg No22.jpg")
            + tuple(f"no/{n} no.jpg" for n in (49, 7))
            + ("no/no 1.jpg", "no/no 4.jpg", "no/no 5.jpeg", "no/no 8.jpg", "no/no 90.jpg")
            + numbered("yes/Y{}", "153.jpg 6.jpg 60.jpg 71.JPG 76.jpg 8.jpg 91.jpg 92.png"),
        ),
        PhotoSet(
            name="food5",
            kind="food (five Food-101 dishes)",
            repo="srohit0/food_mnist",
            commit="e6cdf589a9937cf7fcb53d3a86df053be452e1f5",
            paths=("images", "meta"),
            licence="repository: no code licence; its license_agreement.txt repeats Food-101's: images from "
            "Foodspotting, not ETH Zurich's property, 'any use beyond scientific fair use must be negotiated with "
            "the respective picture owners'",
            source="Food-101 (Bossard, Guillaumin, Van Gool, ECCV 2014), first 10 classes as 'food-MNIST'",
            split="the source's own meta/train.txt and meta/test.txt (Food-101's split); caps 100 train and 40 test "
            "per class, evenly spaced over each list's files sorted by path",
            classes=tuple(
                ClassSpec(
                    c,
                    Pick(f"images/{c}/*", 100, "meta/train.txt", "images"),
                    Pick(f"images/{c}/*", 40, "meta/test.txt", "images"),
                    (100, 40),
                )
                for c in FOOD_CLASSES
            ),
        ),
        PhotoSet(
            name="cats_dogs",
            kind="pets/animals",
            repo="chanakya2734/Image-classification-using-CNN",
            commit="bf746c6e53f1edacd97b383de350f7a495cef0e1",
            paths=("dataset/training_set", "dataset/test_set"),
            licence="repository: no licence file; data: a 2,000 + 2,000 subset of Kaggle's 'Dogs vs. Cats' "
            "(Microsoft Research's Asirra images, from Petfinder.com): licence unclear, research use",
            source="Kaggle 'cat-and-dog' (training_set/test_set layout), from Kaggle 'Dogs vs. Cats' (Asirra)",
            split="the source's own training_set/ and test_set/ folders; caps 150 train and 60 test per class, "
            "evenly spaced over each folder's files sorted by path",
            classes=(
                held_out("cat", "dataset/training_set/cats", "dataset/test_set/cats", (150, 60), (150, 60)),
                held_out("dog", "dataset/training_set/dogs", "dataset/test_set/dogs", (150, 60), (150, 60)),
            ),
        ),
        PhotoSet(
            name="neu_steel",
            kind="textures/materials (hot-rolled steel surface defects)",
            repo="duanhan123/YOLOv3_PyTorch",
            commit="3d2a7e486d31f9d6155f9abcfbc6a9c5af5b4150",
            paths=("NEU-DET/IMAGES",),
            licence="repository: no licence file (a copy of BobLiu20/YOLOv3_PyTorch with data added); data: the "
            "NEU surface defect database (Song and Yan, Northeastern University), offered for research: unclear",
            source="NEU-DET, http://faculty.neu.edu.cn/songkechen/zh_CN/zhym/263269/list/index.htm "
            "(Song and Yan, Applied Surface Science 285, 2013)",
            split=CARVE_RULE + "; the class is the file name's prefix; cap 100 per class (of 300)",
            classes=tuple(
                carve(c.replace("-", "_"), "NEU-DET/IMAGES", 100, (75, 25), f"{c}_*")
                for c in ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
            ),
            notes="greyscale content stored as 416x416 RGB JPEG (NEU-DET's 200x200 images, resized in this copy); "
            "the repository's boxes (ANNOTATIONS, labels) are not used",
        ),
        PhotoSet(
            name="weather4",
            kind="weather/scenes",
            repo="Potassium-chromate/CNN-for-recognizer-weather",
            commit="9bbc18025a4e6c27cd4bd559b6de1d1ae1743e34",
            paths=("weather_image(dataset)",),
            licence="repository: no licence file; data: the Multi-class Weather Dataset (Ajayi, Mendeley Data, "
            "doi:10.17632/4drtyfjtfy.1), CC BY 4.0",
            source="Multi-class Weather Dataset for Image Classification, Gbeminiyi Ajayi, 2018",
            split="the repository's own train/ and test/ folders (its test/ files look like the MWD files missing "
            "from train/, renamed 1.jpg to 75.jpg); cap 120 train per class, test uncapped; 4 MiB files, exact copies "
            "and the near-copies below left out",
            classes=tuple(
                held_out(c, f"weather_image(dataset)/train/{c}", f"weather_image(dataset)/test/{c}", e, (120, None))
                for c, e in (("cloudy", (120, 20)), ("rain", (120, 15)), ("shine", (120, 17)), ("sunrise", (120, 19)))
            ),
            exclude=numbered("weather_image(dataset)/test/shine/{}.jpg", "44 48 49")
            + numbered("weather_image(dataset)/test/sunrise/{}.jpg", "59")
            + numbered(
                "weather_image(dataset)/train/cloudy/cloudy{}.jpg",
                "134 135 147 148 149 150 151 179 202 203 205 219 233 244 250 269 30 34 55 89 9 93 96 97 98",
            )
            + numbered("weather_image(dataset)/train/rain/rain{}.jpg", "152 169 27 32 45 76 83 89 93")
            + numbered(
                "weather_image(dataset)/train/shine/shine{}.jpg",
                "141 187 193 20 205 210 217 228 232 34 35 37 4 52 73 9 96",
            )
            + numbered("weather_image(dataset)/train/sunrise/sunrise{}.jpg", "27 28 301 302 310 330 331 336 60 76 96"),
        ),
    )
}


# ---------------------------------------------------------------- git access


class Repo:
    """Read-only access to one repository's objects through git plumbing."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir
        self._batch: subprocess.Popen[bytes] | None = None

    def git(self, *args: str) -> bytes:
        return subprocess.run(["git", f"--git-dir={self.git_dir}", *args], check=True, capture_output=True).stdout

    def has_commit(self, commit: str) -> bool:
        probe = subprocess.run(
            ["git", f"--git-dir={self.git_dir}", "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
        )
        return probe.returncode == 0

    def tree(self, commit: str, paths: tuple[str, ...]) -> Files:
        """(path, blob id, size) of every file under paths at commit."""
        out = self.git("ls-tree", "-r", "-l", "-z", commit, "--", *paths)
        files = []
        for entry in out.split(b"\0"):
            if not entry:
                continue
            meta, path = entry.split(b"\t", 1)
            _mode, kind, blob, size = meta.split()
            if kind == b"blob":
                # a snapshot lacks blobs of 4 MiB or more, and git prints BAD for their size
                files.append((path.decode(), blob.decode(), int(size) if size.isdigit() else MAX_BYTES))
        return files

    def read(self, blob: str) -> bytes | None:
        """A blob's bytes, or None if the object is not here (a snapshot may lack it)."""
        if self._batch is None:
            self._batch = subprocess.Popen(
                ["git", f"--git-dir={self.git_dir}", "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        assert self._batch.stdin is not None and self._batch.stdout is not None
        self._batch.stdin.write(blob.encode() + b"\n")
        self._batch.stdin.flush()
        header = self._batch.stdout.readline().split()
        if len(header) < 3 or header[1] == b"missing":
            return None
        data = self._batch.stdout.read(int(header[2]))
        self._batch.stdout.read(1)  # the newline after each object
        return data

    def close(self) -> None:
        if self._batch is not None:
            assert self._batch.stdin is not None
            self._batch.stdin.close()
            self._batch.wait()
            self._batch = None


def mirror_git_dir(mirror_dir: Path, repo: str) -> Path | None:
    """The git directory a fetched snapshot left, if any: <owner>+<name>/repo, bare or with .git."""
    base = mirror_dir / repo.replace("/", "+")
    for candidate in (base / "repo", base / "repo" / ".git", base / ".git", base):
        if (candidate / "objects").is_dir() and (candidate / "HEAD").is_file():
            return candidate
    return None


def clone(spec: PhotoSet, cache_dir: Path, base_url: str) -> Path:
    """A partial clone holding the pinned commit and the blobs under spec.paths (sparse checkout
    fetches just those in one go; git show alone would fetch them one by one)."""
    work = cache_dir / spec.repo.replace("/", "+")
    git_dir = work / ".git"
    if not git_dir.is_dir():
        work.parent.mkdir(parents=True, exist_ok=True)
        url = f"{base_url.rstrip('/')}/{spec.repo}"
        print(f"  cloning {url} (blobs on demand) into {work}", flush=True)
        subprocess.run(["git", "clone", "--filter=blob:none", "--no-checkout", url, str(work)], check=True)
    repo = Repo(git_dir)
    if not repo.has_commit(spec.commit):
        subprocess.run(["git", "-C", str(work), "fetch", "--filter=blob:none", "origin", spec.commit], check=True)
    subprocess.run(
        ["git", "-C", str(work), "sparse-checkout", "set", "--no-cone", *(f"/{p}" for p in spec.paths)], check=True
    )
    subprocess.run(
        ["git", "-C", str(work), "-c", "advice.detachedHead=false", "checkout", "-q", spec.commit], check=True
    )
    return git_dir


def open_repo(spec: PhotoSet, mirror_dir: Path | None, cache_dir: Path, base_url: str) -> Repo:
    found = mirror_git_dir(mirror_dir or MIRROR_DIR, spec.repo)
    if found is not None and Repo(found).has_commit(spec.commit):
        print(f"  reading {spec.repo}@{spec.commit[:12]} from the mirror {found}", flush=True)
        return Repo(found)
    return Repo(clone(spec, cache_dir, base_url))


# ---------------------------------------------------------------- choosing files


def is_image_name(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def evenly(items: list, cap: int | None) -> list:
    """Every k-th item so that cap remain, k fractional: indices i*n//cap."""
    if cap is None or len(items) <= cap:
        return list(items)
    return [items[i * len(items) // cap] for i in range(cap)]


def candidates(pick: Pick, tree: Files, repo: Repo, commit: str) -> Files:
    # fnmatch's * also crosses '/': the globs here name flat folders, or file-name prefixes in one
    files = [f for f in tree if fnmatch.fnmatchcase(f[0], pick.glob) and is_image_name(f[0]) and f[2] < MAX_BYTES]
    if pick.listed_in is not None:
        members = set(repo.git("show", f"{commit}:{pick.listed_in}").decode().split())
        root = pick.list_root.rstrip("/") + "/" if pick.list_root else ""
        files = [f for f in files if f[0].startswith(root) and posixpath.splitext(f[0][len(root) :])[0] in members]
    return sorted(files)


def readable(data: bytes | None) -> str | None:
    """Why the bytes are not a usable image, or None if PIL decodes them."""
    if data is None:
        return "absent from this copy of the repository"
    if data.startswith(LFS_MAGIC):
        return "a Git LFS pointer, not the image"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as error:  # PIL raises many kinds for a broken file
        return f"PIL cannot decode it ({type(error).__name__}: {error})"
    return None


# ---------------------------------------------------------------- building


def build(
    name: str, out: Path, mirror_dir: Path | None = None, cache_dir: Path = CACHE_DIR, base_url: str = GIT_BASE_URL
) -> Path:
    """Write the set into out/name (replacing it) and return that folder; raise on a count mismatch."""
    spec = SETS[name]
    print(f"{name}: {spec.kind}", flush=True)
    repo = open_repo(spec, mirror_dir, cache_dir, base_url)
    try:
        tree = repo.tree(spec.commit, spec.paths)
        missing = set(spec.exclude) - {f[0] for f in tree}
        if missing:
            raise SystemExit(f"{name}: the record excludes files the commit lacks: {sorted(missing)}")
        tree = [f for f in tree if f[0] not in spec.exclude]
        pools = {cls.name: pool(cls, tree, repo, spec.commit) for cls in spec.classes}
        pools, skipped = unique(pools)
        chosen: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
        for cls in spec.classes:
            for split, files in split_class(cls, pools[cls.name]).items():
                kept = []
                for path, blob, _size in files:
                    data = repo.read(blob)
                    why = readable(data)
                    if why is None:
                        assert data is not None
                        kept.append((path, data))
                    else:
                        skipped.append(f"{path}: {why}")
                chosen[split][cls.name] = kept
    finally:
        repo.close()
    for line in skipped:
        print(f"  skipped {line}", flush=True)
    counts = {split: {c: len(v) for c, v in by_class.items()} for split, by_class in chosen.items()}
    if counts != spec.expected():
        raise SystemExit(f"{name}: counts {counts} differ from the record's {spec.expected()}")
    return write(spec, chosen, skipped, out)


def pool(cls: ClassSpec, tree: Files, repo: Repo, commit: str) -> dict[str, Files]:
    """A class's candidates before caps: its training pick, and its test pick if it has one."""
    found = {"train": candidates(cls.train, tree, repo, commit)}
    if cls.test is not None:
        found["test"] = candidates(cls.test, tree, repo, commit)
    return found


def unique(pools: dict[str, dict[str, Files]]) -> tuple[dict[str, dict[str, Files]], list[str]]:
    """Drop files whose bytes appear twice (git's blob id is a hash of the bytes), so that no image
    is both trained on and tested on: the first copy in class, split (train first) and path order
    is kept, unless the copies are in different classes, where none is (its label is unsure)."""
    classes_of: dict[str, set[str]] = {}
    for cls, by_split in pools.items():
        for files in by_split.values():
            for _path, blob, _size in files:
                classes_of.setdefault(blob, set()).add(cls)
    seen: set[str] = set()
    dropped: list[str] = []
    kept_pools: dict[str, dict[str, Files]] = {}
    for cls, by_split in pools.items():
        kept_pools[cls] = {}
        for split, files in by_split.items():
            kept = []
            for path, blob, size in files:
                if len(classes_of[blob]) > 1:
                    dropped.append(f"{path}: the same bytes are in classes {sorted(classes_of[blob])}")
                elif blob in seen:
                    dropped.append(f"{path}: the same bytes as a file kept before it")
                else:
                    seen.add(blob)
                    kept.append((path, blob, size))
            kept_pools[cls][split] = kept
    return kept_pools, dropped


def split_class(cls: ClassSpec, found: dict[str, Files]) -> dict[str, Files]:
    train = evenly(found["train"], cls.train.cap)
    if cls.test is not None:
        return {"train": train, "test": evenly(found["test"], cls.test.cap)}
    return {"train": [f for i, f in enumerate(train) if i % 4 != 3], "test": train[3::4]}


def write(spec: PhotoSet, chosen: dict[str, dict[str, list[tuple[str, bytes]]]], skipped: list[str], out: Path) -> Path:
    final = out / spec.name
    staging = out / f".{spec.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    manifest: dict[str, object] = {
        "name": spec.name,
        "kind": spec.kind,
        "repo": spec.repo,
        "commit": spec.commit,
        "licence": spec.licence,
        "source": spec.source,
        "split": spec.split,
        "notes": spec.notes,
        "excluded near-copies": list(spec.exclude),
        "skipped": skipped,
        "files": [],
    }
    files: list[dict[str, str | int]] = []
    for split, by_class in chosen.items():
        for cls, items in by_class.items():
            folder = staging / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for path, data in items:
                target = folder / posixpath.basename(path)
                if target.exists():
                    raise SystemExit(f"{spec.name}: two files named {target.name} in {split}/{cls}")
                target.write_bytes(data)
                files.append({"split": split, "class": cls, "file": target.name, "from": path, "bytes": len(data)})
    manifest["files"] = files
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    total = {split: sum(len(v) for v in by_class.values()) for split, by_class in chosen.items()}
    print(f"  wrote {final}: {total['train']} train, {total['test']} test, {len(skipped)} skipped", flush=True)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the sets into")
    parser.add_argument("--only", nargs="+", choices=sorted(SETS), help="build just these sets")
    parser.add_argument("--mirror-dir", type=Path, help=f"where fetched snapshots are (default {MIRROR_DIR})")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where partial clones are kept")
    parser.add_argument("--git-base-url", default=GIT_BASE_URL, help="clone from here instead of GitHub")
    parser.add_argument("--list", action="store_true", help="print the records and exit")
    args = parser.parse_args(argv)
    names = args.only or list(SETS)
    if args.list:
        for name in names:
            spec = SETS[name]
            print(f"{name}\t{spec.kind}\t{spec.repo}@{spec.commit}\t{spec.expected()}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        build(name, args.out, args.mirror_dir, args.cache_dir, args.git_base_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
