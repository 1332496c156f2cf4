#!/usr/bin/env python
"""Convert a head-CT dataset to the manifest (+ PNG, COCO, YOLO, nnU-Net) (``hemo_mtl.cli.convert``).

Also installed as the console command ``hemo-mtl-convert``; ``python tools/convert.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.convert import cli

if __name__ == "__main__":
    sys.exit(cli())
