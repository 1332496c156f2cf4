#!/usr/bin/env python
"""Score the intensity-threshold baseline on a run's held-out split (``hemo_mtl.cli.threshold_baseline``).

Also installed as the console command ``hemo-mtl-threshold-baseline``; ``python tools/threshold_baseline.py --help``
lists the options.
"""
import sys

from hemo_mtl.cli.threshold_baseline import cli

if __name__ == "__main__":
    sys.exit(cli())
