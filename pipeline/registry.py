"""Finding stages by name.

Short names (``clip``, ``moments``) are looked up in entry-point groups, one
per stage kind, so a third-party package adds stages exactly as chunkline's
own ``stages`` package does, by declaring them in its ``pyproject.toml``::

    [project.entry-points."chunkline.maps"]
    despike = "mypkg.cleaning:despike"

Anything containing a ``.`` or ``:`` is an import string instead:
``"numpy:nan_to_num"`` or ``"numpy.nan_to_num"``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import SpecError

__all__ = ["GROUPS", "available", "did_you_mean", "import_object", "resolve"]

#: Entry-point group holding the short names of each stage kind; ``kind`` holds
#: stage kinds themselves (spec keys such as ``sklearn``, naming a Stage class).
GROUPS = {
    "map": "chunkline.maps",
    "filter": "chunkline.filters",
    "reduce": "chunkline.reductions",
    "kind": "chunkline.kinds",
}


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ``" (did you mean 'x'?)"`` suffix for the closest choice, or ``""``.

    >>> did_you_mean("momnets", ["moments", "histogram"])
    " (did you mean 'moments'?)"
    >>> did_you_mean("zzz", ["moments"])
    ''
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@cache
def available(kind: str) -> dict[str, EntryPoint]:
    """Registered short names for a stage kind, from installed packages."""
    group = GROUPS.get(kind)
    if group is None:
        return {}
    return {ep.name: ep for ep in entry_points(group=group)}


def import_object(target: str) -> Any:
    """Import ``"module:attr"`` or ``"package.module.attr"``.

    Raises
    ------
    SpecError
        Naming the module and attribute that were tried.

    >>> import_object("numpy:nan_to_num").__name__
    'nan_to_num'
    >>> import_object("os.path.join").__name__
    'join'
    """
    if ":" in target:
        module_name, _, attr_path = target.partition(":")
        candidates = [(module_name, attr_path)]
    else:
        # Try the longest importable module prefix first: "a.b.c" -> a.b + c, a + b.c
        parts = target.split(".")
        candidates = [
            (".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)
        ]
    if not candidates or not all(candidates[0]):
        raise SpecError(f"{target!r} is not an import string like 'module:attr' or 'module.attr'")
    first_error: str | None = None
    for module_name, attr_path in candidates:
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            first_error = first_error or f"cannot import module {module_name!r} ({exc})"
            continue
        for attr in attr_path.split("."):
            if not hasattr(obj, attr):
                names = [n for n in dir(obj) if not n.startswith("_")]
                hint = did_you_mean(attr, names)
                raise SpecError(
                    f"cannot import {target!r}: module {module_name!r} has no attribute "
                    f"{attr_path!r}{hint}"
                )
            obj = getattr(obj, attr)
        return obj
    raise SpecError(f"cannot import {target!r}: {first_error}")


def resolve(kind: str, name: str) -> Any:
    """The object a stage of ``kind`` names: an import string or a short name."""
    if "." in name or ":" in name:
        return import_object(name)
    registered = available(kind)
    if name not in registered:
        known = ", ".join(sorted(registered)) or "none installed"
        raise SpecError(
            f"unknown {kind} {name!r}{did_you_mean(name, registered)}; "
            f"built-in names: {known}; or give an import string like 'module:function'"
        )
    try:
        return registered[name].load()
    except Exception as exc:  # a broken plugin must not look like a typo
        raise SpecError(f"{kind} {name!r} is registered but failed to load: {exc}") from exc
