"""The optional C fast paths of the decode hot path (_speedups.c), and the switch between them and pure Python.

The pure-Python functions in values.py, layout.py and jsonenc.py are the reference: a C function either returns
exactly what its reference returns or raises, and then the reference runs (and gives its own error messages).
Raising `Fallback` is the C code's way to leave unusual input to the reference: expected, never counted. Anything
else it raises is a fault of the fast path (a bug, memory): the reference still decides, but the fault is logged
once per kind and counted in `fallbacks`, as every fallback costs the speed of the C path (some 8x).
Without a C compiler at install time the extension is missing and the reference runs alone, only slower.
KCL_RELAY_PURE_PYTHON=1 turns the C paths off; use() switches them at run time (benchmarks, tests).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

__all__ = ["PATHS", "Fallback", "available", "fallbacks", "native", "recover", "use"]

log = logging.getLogger(__name__)

_module: ModuleType | None
try:
    from kcl_relay.cdc import _speedups

    _module = _speedups
except ImportError:  # not built: no compiler, or a source checkout without `setup.py build_ext --inplace`
    _module = None


class _NeverRaised(Exception):
    """Fallback without the C module: nothing raises it."""


available: ModuleType | None = _module
# What the wrappers call: the C module, or None for pure Python. Read at every call, so use() takes effect at once.
native: ModuleType | None = None if os.environ.get("KCL_RELAY_PURE_PYTHON") else _module
# The C code's "leave this one to the reference" (unusual input): not a fault.
Fallback: type[Exception] = _module.Fallback if _module is not None else _NeverRaised

# The fast paths, as `recover` and the metrics name them.
PATHS = ("decode_record", "from_item", "split", "dumps", "order_token")
# Faults of each fast path in this process (exceptions other than Fallback), since its start.
fallbacks: dict[str, int] = dict.fromkeys(PATHS, 0)
_logged: set[tuple[str, str]] = set()

T = TypeVar("T")


def configure(**hooks: object) -> None:
    """Hand the C module the reference functions and limits it defers to (each module passes its own)."""
    if _module is not None:
        _module.configure(**hooks)


def use(enabled: bool) -> bool:
    """Turn the C fast paths on (when built) or off; returns whether they are on now."""
    global native
    native = _module if enabled else None
    return native is not None


def recover(path: str, error: Exception, reference: Callable[..., T], *args: Any) -> T:
    """The reference's answer after fast path `path` raised `error` (not Fallback); a fault is logged and counted.

    A ValueError may be a reference hook refusing bad input (values.parse_number, called from C): when the
    reference refuses the input as well, that is the input's fault, not the fast path's, and the reference's error
    is raised uncounted. Should the reference accept what C refused, or C raise anything else, the fast path is at
    fault.
    """
    if isinstance(error, ValueError):
        try:
            result = reference(*args)
        except ValueError:
            raise
        _fault(path, error)
        return result
    _fault(path, error)
    return reference(*args)


def _fault(path: str, error: Exception) -> None:
    fallbacks[path] = fallbacks.get(path, 0) + 1
    kind = (path, type(error).__name__)
    if kind not in _logged:  # once per kind: a fault on every record must not flood the log
        _logged.add(kind)
        log.warning(
            "C fast path %s raised %s (%.200s); the pure-Python reference took over, about 8x slower (logged once "
            "per kind; counted in kcl_relay_fastpath_fallbacks_total)",
            path,
            type(error).__name__,
            error,
            exc_info=error,
        )
