"""Every public name is exported once, from the layer that defines it and from the facade.

(Named test_package_exports.py: without __init__.py files pytest imports test modules by
basename, and tests/actors/test_exports.py already holds the name test_exports.)
"""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest
import shoal.actors
import shoal.runtime
import shoal.storage

import shoal
import shoal.testing

PACKAGES = [shoal, shoal.actors, shoal.storage, shoal.runtime, shoal.testing]


def ids(module: ModuleType) -> str:
    return module.__name__


@pytest.mark.parametrize("module", PACKAGES, ids=ids)
def test_all_is_a_tuple_of_unique_existing_names(module: ModuleType) -> None:
    names = module.__all__
    assert isinstance(names, tuple)
    assert all(isinstance(name, str) for name in names)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert duplicates == []
    missing = [name for name in names if not hasattr(module, name)]
    assert missing == []
    assert not any(name.startswith("_") for name in names)


@pytest.mark.parametrize("module", PACKAGES, ids=ids)
def test_every_public_class_and_function_of_the_package_is_in_all(module: ModuleType) -> None:
    unlisted = []
    for name, value in vars(module).items():
        if name.startswith("_") or name in module.__all__ or inspect.ismodule(value):
            continue
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if getattr(value, "__module__", "").startswith("shoal."):
            unlisted.append(name)
    assert unlisted == []


@pytest.mark.parametrize("module", PACKAGES, ids=ids)
def test_nothing_public_but_all_and_submodules(module: ModuleType) -> None:
    extra = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and name not in module.__all__ and not inspect.ismodule(value)
    }
    assert extra <= {"annotations"}  # from __future__ import annotations


def test_every_public_name_of_the_runtime_is_reachable_from_shoal() -> None:
    for name in shoal.runtime.__all__:
        assert name in shoal.__all__, name
        assert getattr(shoal, name) is getattr(shoal.runtime, name), name


def test_the_facade_re_exports_the_state_specs_of_storage() -> None:
    for name in shoal.__all__:
        if name in shoal.runtime.__all__:
            continue
        assert getattr(shoal, name) is getattr(shoal.storage, name), name


def test_exported_objects_are_defined_in_shoal() -> None:
    for module in PACKAGES:
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert value.__module__.startswith("shoal."), (module.__name__, name)
