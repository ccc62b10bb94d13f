"""Try a trained lilTinyNet model in the browser, or call it over HTTP.

    python app.py                                   # the fine-tuned model, on http://127.0.0.1:7860
    python app.py --model cifar10_lilTinyNet.h5 --port 8000

Everything it does, and every flag: python app.py --help (tinynet/app.py).
"""

from tinynet import cli
from tinynet.app import main

if __name__ == "__main__":
    cli.run(main)
