"""How large should tiny images be shown to MobileNetV2? A logistic regression on the base's pooled
features, at several model input sizes, for sets of small images.

    python -m bench.bench_tiny_images                   # seeds 0 to 4, alpha 0.35
    python -m bench.bench_tiny_images --alpha 1.0 --seeds 0

Sets: scikit-learn's 8-pixel digits (1,797 images, shipped with scikit-learn, grey), and 400
CIFAR-10 training images of each class from the shared JPEGs at 16 and 32 pixels (--cifar-sides;
down-sampled below 32), 100 test images of each class from CIFAR-10's test folder. Each is written as
class folders and read by the kit's own loader at each size; validation and test are the kit's
carved split for each seed (digits), or validation carved for the first seed and CIFAR-10's test
folder. The regression's C is chosen on validation
as in bench_own_data. Results go to bench/results/tiny_images[_alpha1.0].json.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from bench.bench_own_data import cifar_members
from bench.common import save, weights

SIZES = (32, 64, 96, 128, 160, 224)


def write_digits(root: Path) -> Path:
    """<digit>/*.png, the 8x8 digits scaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for k, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.uint8(np.rint(image * 255 / 16))).save(folder / f"{k:04d}.png")
    return root


def write_small_cifar(root: Path, members: dict, side: int, train: int = 400, test: int = 100) -> Path:
    """train/<class>/ and test/<class>/ of CIFAR-10 images at `side` pixels."""
    for split, count in (("train", train), ("test", test)):
        for (part, name), files in members.items():
            if part != split:
                continue
            folder = root / split / name
            folder.mkdir(parents=True)
            for file, data in files[:count]:
                image = Image.open(io.BytesIO(data)).convert("RGB")
                if side != image.width:
                    image = image.resize((side, side), Image.BILINEAR)
                image.save(folder / file.replace(".jpg", ".png"))
    return root


def regression(features: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """bench_own_data's logistic regression, on features already computed: C chosen on validation."""
    from sklearn.linear_model import LogisticRegression

    scores = {C: LogisticRegression(C=C, max_iter=5000).fit(features["train"], labels["train"])
              .score(features["val"], labels["val"]) for C in np.logspace(-4, 2, 13)}
    best = max(scores, key=scores.get)
    test = LogisticRegression(C=best, max_iter=5000).fit(features["train"], labels["train"]).score(
        features["test"], labels["test"])
    return {"test_accuracy": round(float(test), 4), "C": float(best), "val_accuracy": round(scores[best], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--alpha", type=float, choices=(0.35, 1.0), default=0.35)
    parser.add_argument("--cifar-sides", nargs="*", type=int, default=[16, 32],
                        help="CIFAR-10 down-sampled to these sides (32: as it is)")
    args = parser.parse_args()
    from tinynet.data import default_image_size, load_dataset, split_data
    from tinynet.features import extract_features
    from tinynet.model import build_model, feature_extractor

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        members = cifar_members()
        sets = {"digits8": write_digits(Path(tmp) / "digits8")}
        sets |= {f"cifar10_{side}px": write_small_cifar(Path(tmp) / f"cifar{side}", members, side)
                 for side in args.cifar_sides}
        for name, folder in sets.items():
            side = {"digits8": 8}.get(name) or int(name.split("_")[1][:-2])
            for size in SIZES:
                # The base's features of every image once; each seed's split then picks rows of them.
                data = load_dataset(str(folder), size)
                extractor = feature_extractor(build_model(data.num_classes, size, args.alpha,
                                                          str(weights(args.alpha)), "linear", data.square))
                data.parts = {part: replace(images, images=extract_features(extractor, images.images, 128))
                              for part, images in data.parts.items()}
                for seed in args.seeds if name == "digits8" else args.seeds[:1]:  # CIFAR's test folder is fixed
                    splits = split_data(data, None, None, seed)
                    rows.append({"set": name, "side": side, "image_size": size, "seed": seed,
                                 "default_size": default_image_size([(side, side)]),
                                 **regression(splits.images, splits.labels)})
                    print(rows[-1], flush=True)
    means = {}
    for name in sets:
        for size in SIZES:
            tests = [row["test_accuracy"] for row in rows if row["set"] == name and row["image_size"] == size]
            means.setdefault(name, {})[size] = {"mean": round(float(np.mean(tests)), 4),
                                                "sd": round(float(np.std(tests, ddof=1)), 4) if len(tests) > 1
                                                else None}
    width = "" if args.alpha == 0.35 else f"_alpha{args.alpha}"
    save(f"tiny_images{width}", {"alpha": args.alpha, "seeds": args.seeds, "means": means, "runs": rows})


if __name__ == "__main__":
    main()
