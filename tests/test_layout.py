"""The package layout's rules (README "Layout"): library modules carry no programs, long files say why they are long."""

import ast
from pathlib import Path

import pytest


SOURCES = sorted((Path(__file__).resolve().parents[1] / "src" / "ctal_hf").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(path.parents[2])))
def test_library_modules_have_thin_mains_and_long_files_say_why(path):
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            statements = node.body[1:] if ast.get_docstring(node) else node.body
            assert len(statements) <= 6, f"{path.name}: main() has {len(statements)} statements; move the program out"
    if len(source.splitlines()) > 500:
        assert "Over 500 lines on purpose" in ast.get_docstring(ast.parse(source)), f"{path.name}: say why it is long"
