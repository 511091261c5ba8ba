"""A broken scenario file: it imports a module that does not exist."""

from __future__ import annotations

import shoal_no_such_module  # noqa: F401

raise AssertionError("unreachable: the import above fails")
