#!/usr/bin/env python
"""Run a grid of configs and folds into one results table (``hemo_mtl.cli.run_grid``).

Also installed as the console command ``hemo-mtl-run-grid``; ``python tools/run_grid.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.run_grid import cli

if __name__ == "__main__":
    sys.exit(cli())
