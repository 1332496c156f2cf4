#!/usr/bin/env python
"""Patient-wise k-fold cross-validation of a recipe on real patients (``hemo_mtl.cli.cross_validate``).

Also installed as the console command ``hemo-mtl-cross-validate``; ``python tools/cross_validate.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.cross_validate import cli

if __name__ == "__main__":
    sys.exit(cli())
