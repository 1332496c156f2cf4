#!/usr/bin/env python
"""Regenerate the results tables of README.md and docs/ from run outputs (``hemo_mtl.cli.docs_tables``).

Also installed as the console command ``hemo-mtl-docs-tables``; ``python tools/docs_tables.py --help`` lists the options.
"""
import sys

from hemo_mtl.cli.docs_tables import cli

if __name__ == "__main__":
    sys.exit(cli())
