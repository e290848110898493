"""Fixtures shared by the test folders."""

import hashlib
from pathlib import Path

import pytest


@pytest.fixture
def folder_digest():
    """`digest(folder)`: `{relative path: sha256}` of every file under `folder`, to check that nothing changed."""

    def digest(folder: Path) -> dict[str, str]:
        return {
            path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(folder).rglob("*"))
            if path.is_file()
        }

    return digest
