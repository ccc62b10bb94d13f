"""lilTinyNet side by side: which model to ship.

    python megaTest.py                                  # both standard models
    python megaTest.py --models a.h5 b.h5 --json results.json

Everything it does, and every flag: python megaTest.py --help (tinynet/compare.py).
"""

from tinynet import cli
from tinynet.compare import main

if __name__ == "__main__":
    cli.run(main)
