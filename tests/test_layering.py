"""The layers keep to their folders: the kernel and the state store do not know each other or
the runtime, and nothing pickles (every byte that crosses a process or hits disk is CBOR)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import shoal.actors
import shoal.runtime
import shoal.storage

LAYERS = {
    "actors": Path(shoal.actors.__file__).parent,
    "storage": Path(shoal.storage.__file__).parent,
    "runtime": Path(shoal.runtime.__file__).parent,
}
FORBIDDEN = {
    "actors": ("shoal.storage", "shoal.runtime"),
    "storage": ("shoal.actors", "shoal.runtime"),
    "runtime": (),
}
SERIALIZERS = ("pickle", "cloudpickle", "dill", "marshal", "_pickle", "copyreg", "shelve")


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
                found.append((node.lineno, module))
                if not node.module:  # from .. import storage
                    found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
            elif node.module:
                found.append((node.lineno, node.module))
                # from shoal import storage
                found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def files(layer: str) -> list[Path]:
    paths = sorted(LAYERS[layer].rglob("*.py"))
    assert paths, f"no Python files under {LAYERS[layer]}"
    return paths


def offenders(layer: str, prefixes: tuple[str, ...]) -> list[str]:
    bad = []
    for path in files(layer):
        for line, module in imports(path, f"shoal.{layer}"):
            if any(module == p or module.startswith(p + ".") for p in prefixes):
                bad.append(f"{path.relative_to(LAYERS[layer].parent)}:{line}: {module}")
    return bad


@pytest.mark.parametrize("layer", ["actors", "storage"])
def test_a_lower_layer_imports_neither_its_sibling_nor_the_runtime(layer: str) -> None:
    assert offenders(layer, FORBIDDEN[layer]) == []


@pytest.mark.parametrize("layer", ["actors", "storage", "runtime"])
def test_nothing_imports_a_pickle_like_serializer(layer: str) -> None:
    assert offenders(layer, SERIALIZERS) == []


def test_the_import_checker_sees_relative_and_from_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nfrom ..storage import LmdbBackend\nfrom .. import runtime\n"
        "from shoal import storage\nimport importlib\nimportlib.import_module('dill')\n"
    )
    found = {module for _line, module in imports(sample, "shoal.actors")}
    assert {"pickle", "shoal.storage", "shoal.runtime", "dill"} <= found


def modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.split())


def test_importing_the_kernel_loads_neither_lmdb_nor_the_other_layers() -> None:
    loaded = modules_after("import shoal.actors")
    assert (
        sorted(
            m
            for m in loaded
            if m == "lmdb" or m.startswith(("lmdb.", "shoal.storage", "shoal.runtime"))
        )
        == []
    )


def test_importing_the_state_store_loads_neither_the_kernel_nor_the_runtime() -> None:
    loaded = modules_after("import shoal.storage")
    assert sorted(m for m in loaded if m.startswith(("shoal.actors", "shoal.runtime"))) == []


def test_importing_any_layer_loads_no_pickle_like_serializer_of_ours() -> None:
    loaded = modules_after("import shoal, shoal.actors, shoal.storage, shoal.runtime")
    assert sorted(m for m in loaded if m in ("cloudpickle", "dill")) == []
