from __future__ import annotations

import ast
from pathlib import Path

import shoal.actors


def test_every_public_name_is_exported_once() -> None:
    names = shoal.actors.__all__
    assert isinstance(names, tuple)
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(shoal.actors, name) is not None
    public = {n for n in dir(shoal.actors) if not n.startswith("_")}
    # submodules imported by the package show up as attributes; they are private (_x)
    assert public - {"annotations"} == set(names)


def test_the_kernel_imports_neither_storage_nor_runtime() -> None:
    root = Path(shoal.actors.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            for module in modules:
                assert not module.startswith(("shoal.storage", "shoal.runtime", "pickle")), (
                    path.name,
                    module,
                )
                assert module not in ("storage", "runtime", "lmdb"), (path.name, module)
