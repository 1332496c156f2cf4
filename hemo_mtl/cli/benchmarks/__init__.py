"""Speed benchmarks, one module per topic, run by ``hemo-mtl-benchmark <topic>`` (``tools/benchmark.py``)."""
