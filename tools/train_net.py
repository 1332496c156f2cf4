#!/usr/bin/env python
"""Train (and evaluate) a model from a YAML config (``hemo_mtl.cli.train``).

Also installed as the console command ``hemo-mtl-train``; ``python tools/train_net.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.train import cli

if __name__ == "__main__":
    sys.exit(cli())
