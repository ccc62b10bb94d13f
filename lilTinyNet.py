"""lilTinyNet, stage 1: an image classifier on a frozen, ImageNet-pretrained MobileNetV2.

    python lilTinyNet.py                                  # CIFAR-10 through Keras, MobileNetV2 alpha 1.0
    python lilTinyNet.py --data-dir my_photos.zip         # your own images: class folders, see --help

Everything it does, and every flag: python lilTinyNet.py --help (tinynet/stage1.py).
"""

from tinynet import cli
from tinynet.data import preprocess_data  # noqa: F401  the original's contract: from lilTinyNet import preprocess_data
from tinynet.stage1 import main

if __name__ == "__main__":
    cli.run(main)
