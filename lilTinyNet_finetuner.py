"""lilTinyNet, stage 2: fine-tune the base model on augmented images with the top of MobileNetV2 unfrozen.

    python lilTinyNet.py && python lilTinyNet_finetuner.py

Everything it does, and every flag: python lilTinyNet_finetuner.py --help (tinynet/stage2.py).
"""

from tinynet import cli
from tinynet.stage2 import main

if __name__ == "__main__":
    cli.run(main)
