"""The optional C fast paths of the decode hot path (_speedups.c), and the switch between them and pure Python.

The pure-Python functions in values.py, layout.py and jsonenc.py are the reference: a C function either returns
exactly what its reference returns or raises, and then the reference runs (and gives its own error messages).
Without a C compiler at install time the extension is missing and the reference runs alone, only slower.
KCL_RELAY_PURE_PYTHON=1 turns the C paths off; use() switches them at run time (benchmarks, tests).
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["available", "native", "use"]

try:
    from kcl_relay.cdc import _speedups as _module
except ImportError:  # not built: no compiler, or a source checkout without `setup.py build_ext --inplace`
    _module = None

available: ModuleType | None = _module
# What the wrappers call: the C module, or None for pure Python. Read at every call, so use() takes effect at once.
native: ModuleType | None = None if os.environ.get("KCL_RELAY_PURE_PYTHON") else _module


def configure(**hooks: object) -> None:
    """Hand the C module the reference functions and limits it defers to (each module passes its own)."""
    if _module is not None:
        _module.configure(**hooks)


def use(enabled: bool) -> bool:
    """Turn the C fast paths on (when built) or off; returns whether they are on now."""
    global native
    native = _module if enabled else None
    return native is not None
