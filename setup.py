"""Metadata lives in setup.cfg; this file only declares the optional C extension (kcl_relay/cdc/_speedups.c).

Without a C compiler the build skips it (optional=True) and the pure-Python reference code runs instead.
In a source checkout used through PYTHONPATH: `python3 setup.py build_ext --inplace`.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("kcl_relay.cdc._speedups", ["kcl_relay/cdc/_speedups.c"], optional=True, extra_compile_args=["-O2"])
    ]
)
