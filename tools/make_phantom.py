#!/usr/bin/env python
"""Write a seeded synthetic head-CT dataset (``hemo_mtl.cli.phantom``).

Also installed as the console command ``hemo-mtl-phantom``; ``python tools/make_phantom.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.phantom import cli

if __name__ == "__main__":
    sys.exit(cli())
