#!/usr/bin/env python
"""Run a trained checkpoint on CT scans (``hemo_mtl.cli.predict``).

Also installed as the console command ``hemo-mtl-predict``; ``python tools/predict.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.predict import cli

if __name__ == "__main__":
    sys.exit(cli())
