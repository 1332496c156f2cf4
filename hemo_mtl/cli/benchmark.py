#!/usr/bin/env python
"""Speed benchmarks, one module per topic in hemo_mtl/cli/benchmarks/ (speed goals live here, never in tests).

    python tools/benchmark.py convert      # phantom generation, conversion throughput, mask -> COCO/YOLO vs others
    python tools/benchmark.py model        # forward+backward per backbone, multi-task vs single-task
    python tools/benchmark.py cocoeval     # faster-coco-eval vs pycocotools
    python tools/benchmark.py train        # training throughput, data loading vs compute

Extra arguments go to the benchmark (`python tools/benchmark.py convert --help`). Installed as the
console command ``hemo-mtl-benchmark``.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys

from hemo_mtl.cli import benchmarks
from hemo_mtl.cli_errors import run_main


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))


def load(name: str):
    """The benchmark module, imported by its package name: multiprocessing pickles its functions by
    module name, so it must be in sys.modules (a module loaded from a file spec is not)."""
    return importlib.import_module(f"{benchmarks.__name__}.{name}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("available:", ", ".join(names))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"error: unknown benchmark {name!r}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    result = load(name).main(rest)
    return result if isinstance(result, int) else 0


def cli(argv=None) -> int:
    """The console command: ``main`` with user errors as one line (exit status 2)."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
