"""Naming code so that another process can find it: ``module:qualname`` or ``file.py:qualname``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = ("factory_reference", "file_module_name", "import_file", "resolve_object")


def file_module_name(path: str | Path) -> str:
    """The deterministic module name a file is loaded under, the same in every process."""
    resolved = Path(path).resolve()
    digest = hashlib.sha1(str(resolved).encode(), usedforsecurity=False).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in resolved.stem)
    return f"_shoal_file_{stem}_{digest}"


def import_file(path: str | Path) -> Any:
    """Import a Python file under :func:`file_module_name` (once per process) and return it.

    Raises:
        FileNotFoundError: there is no such file.
        ImportError: the file cannot be loaded as a module.
    """
    path = Path(path)
    name = file_module_name(path)
    module = sys.modules.get(name)
    if module is not None:
        return module
    if not path.is_file():
        raise FileNotFoundError(f"file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def resolve_object(reference: str) -> Any:
    """Import and return the object named by ``"pkg.module:attr.path"`` or ``"file.py:attr"``.

    A file is loaded under :func:`file_module_name`, so classes defined in it have the same
    ``module:qualname`` in every process that loaded the same file.

    Raises:
        ValueError: the reference has no ``:``.
        ImportError, AttributeError, FileNotFoundError: the object cannot be found.
    """
    module_part, sep, attr_path = reference.rpartition(":")
    if not sep or not module_part or not attr_path:
        raise ValueError(
            f"expected 'package.module:name' or 'path/to/file.py:name'; got {reference!r}"
        )
    if module_part.endswith(".py") or "/" in module_part:
        obj = import_file(module_part)
    else:
        obj = importlib.import_module(module_part)
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f"{module_part} has no attribute {part!r} (reference {reference!r})"
            ) from None
    return obj


def factory_reference(factory: object) -> str | None:
    """``module:qualname`` for a class or module-level function, else None."""
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if "<" in qualname or module == "__main__":
        return None
    return f"{module}:{qualname}"
