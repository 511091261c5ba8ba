"""The public surface of shoal.storage, and the layering rules its source keeps."""

from __future__ import annotations

import ast
from pathlib import Path

import shoal.storage

STORAGE_DIR = Path(shoal.storage.__file__).parent


def test_all_is_a_tuple_without_duplicates_and_every_name_exists() -> None:
    assert isinstance(shoal.storage.__all__, tuple)
    assert len(set(shoal.storage.__all__)) == len(shoal.storage.__all__)
    for name in shoal.storage.__all__:
        assert hasattr(shoal.storage, name), name


def test_every_public_attribute_is_exported() -> None:
    public = {
        name
        for name, value in vars(shoal.storage).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("shoal.")
    }
    assert public <= set(shoal.storage.__all__)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_storage_imports_neither_actors_nor_runtime_nor_pickle() -> None:
    sources = sorted(STORAGE_DIR.glob("*.py"))
    assert sources
    for source in sources:
        for name in _imports(source):
            assert not name.startswith(("shoal.actors", "shoal.runtime", "shoal.storage")), (
                f"{source.name} imports {name}"
            )
            assert name.split(".")[0] not in {"pickle", "actors", "runtime", "marshal", "dill"}, (
                f"{source.name} imports {name}"
            )


def test_private_modules_and_one_exceptions_module() -> None:
    names = sorted(p.name for p in STORAGE_DIR.glob("*.py"))
    assert all(name == "__init__.py" or name.startswith("_") for name in names)
    assert "_exceptions.py" in names


def test_exceptions_share_one_base_with_one_sentence_docstrings() -> None:
    for name in shoal.storage.__all__:
        value = getattr(shoal.storage, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, shoal.storage.StorageError), name
            doc = value.__doc__ or ""
            assert doc.endswith("."), name
            assert doc.count(". ") == 0, name
