"""The command-line programs: one module per command, each with ``main`` and a console entry ``cli``.

``tools/<name>.py`` in a checkout and the ``hemo-mtl-<name>`` console commands that
``pip install`` creates (setup.py) run the same ``cli`` functions.
"""
