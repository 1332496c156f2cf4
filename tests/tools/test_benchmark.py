"""tools/benchmark.py: the dispatcher's benchmark modules can be used by spawned worker processes."""
from __future__ import annotations

import multiprocessing as mp
import pickle

from hemo_mtl.cli import benchmark


def _dispatcher():
    return benchmark


def test_benchmark_functions_pickle_into_a_spawned_worker():
    """`benchmark.py model` runs each measurement in a spawned process: its functions must pickle by
    module name (a module loaded from a file spec without sys.modules raised PicklingError)."""
    model = _dispatcher().load("model")
    assert pickle.loads(pickle.dumps(model.table)) is model.table
    with mp.get_context("spawn").Pool(1) as pool:  # the child imports hemo_mtl.cli.benchmarks.model by name
        header = pool.apply(model.table, ([],))
    assert header == model.table([]) and header.startswith("| backbone | model |")


def test_unknown_benchmark_is_one_line(capsys):
    assert _dispatcher().main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown benchmark 'nope'" in err
