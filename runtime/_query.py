"""Interactive queries: ``await job.query(operator, state, key)`` reads one key's value from
the key-group actor that owns it, wherever it runs.

The driver checks the names against the flow (:func:`check_query`), hashes the key to its key
group and asks that key-group actor with a :class:`QueryState` message through the driver's
directory, which follows every placement update. The actor answers from its store (unflushed
changes included) between two batches, so the answer is a state the actor actually went
through: it reflects every record the actor processed before the query and none after.

During a live migration the ask follows the placement: a message for a key group that has
left a worker is forwarded to its new owner (the kernel does that for every message), and a
successor that has not received the state yet answers :data:`MOVING` instead of reading a
store it does not have; the driver then waits for the placement to change and asks again.
A stale store is never read: the old owner answers only while it still owns the key group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from shoal.actors import ActorStoppedError, PeerLostError, UnknownActorError
from shoal.storage import UnknownStateError

from ._exceptions import UnknownOperatorError
from ._keys import key_group_of
from ._messages import QueryState
from ._plan import Plan, actor_name

if TYPE_CHECKING:
    from ._control import JobControl
    from ._keygroup import KeyGroupActor

__all__ = ("MOVING", "answer_query", "ask_query", "check_query")

#: A key-group actor's answer while its state is on the way to it (ask again).
MOVING = ("moving",)
_ABSENT = object()

# What an ask to a key-group actor can fail with when its attempt goes down under it.
ATTEMPT_ENDED = (ActorStoppedError, PeerLostError, UnknownActorError)


async def answer_query(actor: KeyGroupActor, message: QueryState) -> tuple[Any, ...]:
    """The key-group actor's side: ``("value", v)``, ``("absent",)`` or :data:`MOVING`."""
    if actor.arriving is not None:
        if actor.handoff is None:
            return MOVING
        await actor._take_over()  # the state is here: take it (and what was queued) first
    store = actor.store
    if store is None:  # it has just handed the key group off: the successor answers
        return MOVING
    value = store.get(message.state, message.key, _ABSENT)
    return ("absent",) if value is _ABSENT else ("value", value)


def check_query(plan: Plan, operator: object, state: object, key: Any) -> str:
    """The name of the key-group actor that owns ``key`` of ``operator``.

    Raises:
        UnknownOperatorError: the flow has no keyed operator named ``operator``.
        UnknownStateError: the operator declares no state named ``state``.
        TypeError: ``key`` is not a valid key (str, bytes, int or a tuple of those).
    """
    declared = plan.state_declarations()
    if operator not in declared:
        known = ", ".join(repr(name) for name in sorted(declared)) or "none"
        raise UnknownOperatorError(
            f"flow {plan.flow.name!r} has no keyed operator {operator!r}; its keyed "
            f"operators are {known} (the name= given to count/reduce/process/window)"
        )
    assert isinstance(operator, str)
    states = [spec["name"] for spec in declared[operator]]
    if state not in states:
        known = ", ".join(repr(name) for name in states) or "none"
        raise UnknownStateError(
            f"operator {operator!r} has no state {state!r}; its states are {known}"
        )
    return actor_name(operator, key_group_of(key, plan.num_key_groups))


async def ask_query(
    control: JobControl,
    name: str,
    state: str,
    key: Any,
    changed: Callable[[JobControl, anyio.Event], Awaitable[None]],
) -> tuple[Any, ...] | None:
    """Ask key-group actor ``name`` of this attempt; its answer, or None when the key group
    is moving or the attempt went down: ``changed(control, event)`` has then been awaited
    (``event``: the supervisor's placement-or-checkpoint change, taken before the ask, so a
    move that completes meanwhile is not missed); ask again."""
    supervisor = control.supervisor
    event = supervisor.checkpoint_changed  # set when a placement version is applied
    try:
        reply = await supervisor.worker.ref(name).ask(QueryState(state, key))
    except ATTEMPT_ENDED:
        await changed(control, event)
        return None
    answer = tuple(reply)
    if answer == MOVING:
        await changed(control, event)
        return None
    return answer
