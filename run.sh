#!/usr/bin/env bash
# Set up a virtual environment, then run the whole kit: base training, fine-tuning, comparison.
# Flags go to lilTinyNet.py; the later stages read the data source and split from its sidecar.
set -euo pipefail
cd "$(dirname "$0")"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q -r requirements.txt
python lilTinyNet.py "$@"
python lilTinyNet_finetuner.py
python megaTest.py
