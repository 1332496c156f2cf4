#!/usr/bin/env python
"""Export a trained checkpoint to ONNX or TorchScript (``hemo_mtl.cli.export``).

Also installed as the console command ``hemo-mtl-export``; ``python tools/export.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.export import cli

if __name__ == "__main__":
    sys.exit(cli())
