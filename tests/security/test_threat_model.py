"""docs/threat-model.md stays true: every test it names exists, and every security test is named in it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "threat-model.md"
_REF = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_referenced_test_exists() -> None:
    refs = _REF.findall(DOC.read_text())
    assert len(refs) > 80
    missing = []
    for file, name in refs:
        path = ROOT / file
        if not path.is_file():
            missing.append(file)
        elif name and name not in _functions(path):
            missing.append(f"{file}::{name}")
    assert not missing, missing


def test_every_security_test_is_in_the_threat_model() -> None:
    named = {f"{file}::{name}" for file, name in _REF.findall(DOC.read_text()) if name}
    unlisted = []
    for path in sorted((ROOT / "tests" / "security").glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        rel = path.relative_to(ROOT).as_posix()
        unlisted += [f"{rel}::{fn}" for fn in sorted(_functions(path))
                     if fn.startswith("test_") and f"{rel}::{fn}" not in named]
    assert not unlisted, unlisted


def test_all_four_mechanisms_and_the_gaps_are_covered() -> None:
    text = DOC.read_text()
    for heading in ("OAuth 2.1, DCR and MCP", "AAuth grant", "Agent Auth", "x402 payments", "Out of scope"):
        assert re.search(rf"^## .*{re.escape(heading)}", text, flags=re.M), heading
