"""lilTinyNet's detailed look at each saved model: a report page, per-class scores, pictures.

    python evaluator_lilTinyNet_finetuned.py            # both standard models: reports/index.html
    python evaluator_lilTinyNet_finetuned.py --models my.h5 --data-dir PATH --out-dir my_reports

Everything it does, and every flag: python evaluator_lilTinyNet_finetuned.py --help (tinynet/evaluate.py).
"""

from tinynet import cli
from tinynet.evaluate import main

if __name__ == "__main__":
    cli.run(main)
