"""Export a trained lilTinyNet model for phones and CPU servers; every export is checked first.

    python export.py --format tflite tflite-int8            # beside the model: .tflite, _int8.tflite
    python export.py --model my.h5 --format onnx openvino --output exports/my

Everything it does, and every flag: python export.py --help (tinynet/export.py).
"""

from tinynet import cli
from tinynet.export import main

if __name__ == "__main__":
    cli.run(main)
