"""Stop signals (Ctrl-C, SIGTERM, SIGHUP) held back while a run must not be cut short.

A run stopped halfway through moving its outputs into place, or through
removing what it no longer needs, would leave old and new files side by
side. :func:`stops_held_back` notes a stop that arrives meanwhile and
delivers it afterwards.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["STOP_SIGNALS", "stops_held_back"]

#: Signals that stop a run (SIGHUP only where there is one).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def stops_held_back() -> Iterator[None]:
    """Hold stop signals back for the block; deliver the first that came, after it.

    Their Python handlers are swapped for one that notes the signal. On
    leaving, every handler is put back, then the first signal noted goes to
    the handler it was meant for (Ctrl-C's raises ``KeyboardInterrupt``). If
    the block failed, its error is raised instead. Blocking the signals would
    only hold them back from this thread: the kernel hands a process's signal
    to any thread that does not block it. Only the main thread can swap
    handlers; elsewhere, the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Any] = {}
    try:
        for each in STOP_SIGNALS:
            handler = signal.getsignal(each)
            if handler is not signal.SIG_IGN and handler is not None:  # None: set from C
                previous[each] = handler  # first: a stop may come at any line
                signal.signal(each, lambda signum, frame: held.append(signum))
        yield
    finally:
        late = _put_back(previous)
    # Here only if the block succeeded.
    stop = late or (_deliver(held[0], previous[held[0]]) if held else None)
    if stop is not None:
        raise stop


def _put_back(handlers: dict[int, Any]) -> KeyboardInterrupt | None:
    """Put every handler back, even if a stop comes meanwhile; return that stop."""
    stop = None
    remaining = list(handlers.items())
    while remaining:
        try:
            while remaining:
                signal.signal(*remaining[0])
                remaining.pop(0)
        except KeyboardInterrupt as exc:  # a restored handler met its signal
            stop = stop or exc
    return stop


def _deliver(signum: int, handler: Any) -> KeyboardInterrupt | None:
    """What ``signum`` would have done, had it not been held back: its stop, if it raises one."""
    try:
        if callable(handler):
            handler(signum, None)
        else:  # the default action (SIG_DFL): now that the handler is back
            signal.raise_signal(signum)
    except KeyboardInterrupt as exc:
        return exc
    return None
