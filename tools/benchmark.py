#!/usr/bin/env python
"""Speed benchmarks (``hemo_mtl.cli.benchmark``).

Also installed as the console command ``hemo-mtl-benchmark``; ``python tools/benchmark.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.benchmark import cli

if __name__ == "__main__":
    sys.exit(cli())
