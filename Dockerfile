# lilTinyNet on a GPU: the official TensorFlow image that requirements.txt pins, plus Graphviz
# for plot_model and the remaining requirements. TensorFlow itself is never reinstalled.
#   docker build -t liltinynet .
#   docker run --gpus all -v keras-cache:/home/tiny/.keras -v "$PWD/out:/out" liltinynet
FROM tensorflow/tensorflow:2.21.0-gpu

# Graphviz's `dot` program; Ubuntu's package version follows the pinned base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/*

# The image's TensorFlow satisfies the pin in requirements.txt, so pip leaves it alone.
COPY requirements.txt /app/requirements.txt
RUN pip install --no-cache-dir -r /app/requirements.txt

# A fixed, non-root user with a real HOME: `-u $(id -u)` alone leaves HOME=/ and sends the
# Keras cache to /tmp. The Keras cache (downloaded data and weights) and the outputs are volumes.
RUN useradd --create-home --uid 1000 tiny \
    && mkdir -p /home/tiny/.keras /out \
    && chown tiny:tiny /home/tiny/.keras /out
ENV HOME=/home/tiny \
    KERAS_HOME=/home/tiny/.keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONUNBUFFERED=1
COPY --chown=tiny:tiny tinynet /app/tinynet
COPY --chown=tiny:tiny lilTinyNet.py lilTinyNet_finetuner.py evaluator_lilTinyNet_finetuned.py megaTest.py \
     predict.py export.py /app/
VOLUME ["/home/tiny/.keras", "/out"]
USER 1000:1000
WORKDIR /out
CMD ["python", "/app/lilTinyNet.py"]
