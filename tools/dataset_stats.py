#!/usr/bin/env python
"""Dataset statistics of a converted dataset (``hemo_mtl.cli.stats``).

Also installed as the console command ``hemo-mtl-stats``; ``python tools/dataset_stats.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.stats import cli

if __name__ == "__main__":
    sys.exit(cli())
