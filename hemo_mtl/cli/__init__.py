"""The command-line programs: one module per command, each with ``main`` and a console entry ``cli``.

``tools/<script>.py`` in a checkout and the ``hemo-mtl-*`` console commands that ``pip install``
creates (setup.py ``console_scripts``) run the same ``cli`` functions.
"""
