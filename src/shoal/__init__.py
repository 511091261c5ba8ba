"""shoal: stateful stream processing on asyncio.

One import for users: the dataflow API, sources, sinks, state declarations, scenarios and the
job runner. The layers stay importable on their own: ``shoal.actors`` (the actor kernel),
``shoal.storage`` (keyed state on LMDB) and ``shoal.runtime`` (the streaming engine).
"""

from __future__ import annotations

from shoal.runtime import *  # noqa: F403 - the facade re-exports the runtime's curated API
from shoal.runtime import __all__ as _runtime_all
from shoal.storage import AggregatingStateSpec as AggregatingStateSpec
from shoal.storage import ListStateSpec as ListStateSpec
from shoal.storage import MapStateSpec as MapStateSpec
from shoal.storage import ReducingStateSpec as ReducingStateSpec
from shoal.storage import StateSpec as StateSpec
from shoal.storage import ValueStateSpec as ValueStateSpec

__version__ = "0.1.0"

__all__ = (
    *_runtime_all,
    "StateSpec",
    "ValueStateSpec",
    "ListStateSpec",
    "MapStateSpec",
    "ReducingStateSpec",
    "AggregatingStateSpec",
)
