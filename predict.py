"""Classify your own images with a trained lilTinyNet model.

    python predict.py photo.jpg                             # the 3 likeliest classes of one image
    python predict.py photos/ more.zip 'shots/**/*.png' --csv predictions.csv
    python predict.py photos/ --explain heat_maps/          # and where in each image the model looked

Everything it does, and every flag: python predict.py --help (tinynet/predict.py).
"""

from tinynet import cli
from tinynet.predict import main

if __name__ == "__main__":
    cli.run(main)
