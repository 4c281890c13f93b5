"""Waiting in a server command's main thread until Ctrl-C or SIGTERM, then stopping the server."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


def wait_until_stopped(stop_server: Callable[[], None]) -> None:
    """Block until Ctrl-C or SIGTERM (or, off the main thread, forever), then call ``stop_server``.

    The SIGTERM handler is installed only in the main thread, where Python allows it, and the
    previous one is put back afterwards.
    """
    stop = threading.Event()
    previous: Any = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
