"""The type stub of the C extension (_speedups.pyi, what mypy reads) names exactly what the built module has."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kcl_relay.cdc import speedups

STUB = Path(speedups.__file__).with_name("_speedups.pyi")


def stub_names() -> set[str]:
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}


@pytest.mark.skipif(speedups.available is None, reason="the C extension is not built (setup.py build_ext --inplace)")
def test_stub_names_the_built_module() -> None:
    built = {name for name in dir(speedups.available) if not name.startswith("__")}
    assert stub_names() == built
