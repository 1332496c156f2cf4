#!/usr/bin/env python
"""Evaluate prediction files from any model (``hemo_mtl.cli.evaluate``).

Also installed as the console command ``hemo-mtl-evaluate``; ``python tools/evaluate.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.evaluate import cli

if __name__ == "__main__":
    sys.exit(cli())
