"""One clear line per user error at a tool's top level, exit status 2; a bug still shows its traceback.

A user error is a problem with what the user gave: a bad file (``DataError``), config
(``ConfigError``), checkpoint (``CheckpointError``), a path that would leave the output folder
(``UnsafePathError``), a file system refusal (missing file, permission, read-only folder, disk full:
``OSError``) or input nested too deep to parse (``RecursionError``). Every tool's ``__main__`` goes
through :func:`run_main`, so these never reach the user as a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

EXIT_USER_ERROR = 2


# (module, class): looked up only in modules already imported, since an error of a module that never
# loaded cannot have been raised (and a tool without torch must not import it to report a bad path)
_TYPES = (("hemo_mtl.data.io", "DataError"), ("hemo_mtl.config_schema", "ConfigError"),
          ("hemo_mtl.engine.checkpoint", "CheckpointError"), ("hemo_mtl.paths", "UnsafePathError"),
          ("hemo_mtl.engine.trainer", "NonFiniteLossError"))


def user_error_types(extra: tuple[type, ...] = ()) -> tuple[type, ...]:
    """The exception types reported as one line."""
    found = [getattr(sys.modules[m], name) for m, name in _TYPES if m in sys.modules]
    return (*found, OSError, RecursionError, *extra)


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: an OSError names its file and the system's reason, without the errno."""
    if isinstance(exc, RecursionError):
        return "input is nested too deeply to read (RecursionError); is it a file of the expected kind?"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror}"
        if getattr(exc, "filename2", None):
            text += f" (-> {exc.filename2})"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def run_main(main: Callable, *args, extra: tuple[type, ...] = ()) -> int:
    """``main(*args)`` with user errors printed as ``error: <one line>`` on stderr and exit status 2.

    ``main`` returns an exit status (an int) or anything else for 0. Exceptions not in
    :func:`user_error_types` propagate: they are bugs and keep their traceback.
    """
    try:
        result = main(*args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - filtered just below
        if not isinstance(exc, user_error_types(extra)):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
