"""Find a flow from a reference that every worker process can resolve on its own.

Worker processes never receive a pickled flow: each one imports the same definition and builds
the same :class:`Flow` from it. A reference is ``"path/to/file.py:name"`` or
``"package.module:name"``; ``name`` is a Flow, a scenario (anything with ``build_flow``) or a
function returning a Flow, called with the job's parameters.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from ._dataflow import Flow

__all__ = ("load_flow", "load_object", "load_module", "normalize_ref")


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


def load_module(target: str) -> ModuleType:
    """Import a module by dotted name, or a ``.py`` file under a name derived from its path."""
    if not target.endswith(".py"):
        return importlib.import_module(target)
    path = Path(target).resolve()
    digest = hashlib.blake2b(str(path).encode(), digest_size=6).hexdigest()
    name = f"shoal_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_object(ref: str) -> Any:
    """Return the object a ``target:name`` reference points at."""
    target, _, attr = normalize_ref(ref).rpartition(":")
    module = load_module(target)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise AttributeError(f"{target} has no attribute {attr!r}") from None


def load_flow(ref: str, params: Mapping[str, Any] | None = None) -> Flow:
    """Build the Flow a reference names, with ``params``."""
    obj = load_object(ref)
    params = dict(params or {})
    if isinstance(obj, Flow):
        if params:
            raise TypeError(f"{ref} is a Flow object; parameters need a function that builds it")
        return obj
    build = getattr(obj, "build_flow", obj)
    if not callable(build):
        raise TypeError(f"{ref} is neither a Flow, a scenario nor a function returning a Flow")
    flow = build(**params)
    if not isinstance(flow, Flow):
        raise TypeError(f"{ref} returned {type(flow).__name__}, not a Flow")
    return flow
