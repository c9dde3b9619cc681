"""A tqdm progress bar per pass, shown only to a person watching a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

__all__ = ["Progress", "progress_bar", "should_show"]


def should_show(requested: bool | None) -> bool:
    """``requested`` if given; otherwise only when stdout is a terminal."""
    if requested is not None:
        return requested
    return sys.stdout.isatty()


class Progress:
    """Advances a bar by chunks, showing rows/s and MB/s."""

    def __init__(self, bar: tqdm | None) -> None:
        self._bar = bar
        self._rows = 0
        self._bytes = 0

    def advance(self, rows: int, nbytes: int) -> None:
        """Record one finished chunk of ``rows`` rows and ``nbytes`` input bytes."""
        if self._bar is None:
            return
        self._rows += rows
        self._bytes += nbytes
        elapsed = max(self._bar.format_dict["elapsed"], 1e-9)
        self._bar.set_postfix_str(
            f"{self._rows / elapsed:,.0f} rows/s, {self._bytes / elapsed / 1e6:,.0f} MB/s",
            refresh=False,
        )
        self._bar.update(1)


@contextmanager
def progress_bar(n_chunks: int, nbytes: int, label: str, show: bool) -> Iterator[Progress]:
    """A bar over ``n_chunks`` chunks (``nbytes`` of input), or a silent stand-in."""
    if not show:
        yield Progress(None)
        return
    with tqdm(total=n_chunks, desc=label, unit="chunk", file=sys.stderr, leave=True) as bar:
        yield Progress(bar)
