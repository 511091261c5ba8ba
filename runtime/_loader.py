"""Find a flow from a reference that every worker process can resolve on its own.

Worker processes never receive a pickled flow: each one imports the same definition and builds
the same :class:`Flow` from it. A reference is ``"path/to/file.py:name"`` or
``"package.module:name"``; ``name`` is a Flow, a scenario (anything with ``build_flow``) or a
function returning a Flow, called with the job's parameters. Files are imported by the actor
kernel's loader, under the same module name in every process.

A file's folder is put first on ``sys.path`` before the file is imported, as ``python FILE``
does for a script, so a scenario or flow file can import a helper module beside it. This
module runs in the driver and in every worker process, so each process does the same.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from shoal.actors import import_file, resolve_object

from ._dataflow import Flow

__all__ = ("load_flow", "load_module", "load_object", "normalize_ref")


def normalize_ref(ref: str) -> str:
    """Make a file reference absolute, so a process started elsewhere finds the same file."""
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(
            "flow reference must look like 'path/to/file.py:name' or 'package.module:name'; "
            f"got {ref!r}"
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"flow file not found: {target}")
        return f"{path.resolve()}:{attr}"
    return ref


def _put_folder_on_path(file: Path) -> None:
    """Put ``file``'s folder first on ``sys.path`` (once), so modules beside it import."""
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)


def load_module(path: str | Path) -> ModuleType:
    """Import a ``.py`` file (once per process, under the kernel's name for it).

    Its folder goes first on ``sys.path``, so it can import modules beside it.
    """
    file = Path(path).resolve()
    _put_folder_on_path(file)
    module: ModuleType = import_file(file)
    return module


def load_object(ref: str) -> Any:
    """Return the object a ``target:name`` reference points at.

    For a file reference, the file's folder goes first on ``sys.path`` (see
    :func:`load_module`).
    """
    ref = normalize_ref(ref)
    target = ref.rpartition(":")[0]
    if target.endswith(".py"):
        _put_folder_on_path(Path(target))
    return resolve_object(ref)


def load_flow(ref: str, params: Mapping[str, Any] | None = None) -> Flow:
    """Build the Flow a reference names, with ``params``.

    A scenario's parameters are its defaults overridden by ``params``.
    """
    obj = load_object(ref)
    params = dict(params or {})
    if isinstance(obj, Flow):
        if params:
            raise TypeError(f"{ref} is a Flow object; parameters need a function that builds it")
        return obj
    resolve = getattr(obj, "resolve_params", None)
    if callable(resolve):
        params = resolve(params)
    build = getattr(obj, "build_flow", obj)
    if not callable(build):
        raise TypeError(f"{ref} is neither a Flow, a scenario nor a function returning a Flow")
    flow = build(**params)
    if not isinstance(flow, Flow):
        raise TypeError(f"{ref} returned {type(flow).__name__}, not a Flow")
    return flow
