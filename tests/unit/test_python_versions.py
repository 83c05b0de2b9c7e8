"""setup.cfg says which Pythons kcl-relay supports; noxfile.py runs the unit suite on exactly those."""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def nox_pythons() -> list[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PYTHONS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("noxfile.py defines no PYTHONS")


def test_setup_cfg_declares_the_pythons_nox_tests() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    classifiers = config["metadata"]["classifiers"].split("\n")
    declared = [m[1] for c in classifiers if (m := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c))]
    pythons = nox_pythons()
    assert declared == pythons
    assert config["options"]["python_requires"] == f">={pythons[0]}"
