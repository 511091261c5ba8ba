"""The Actor base class and its supervision policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._cell import Cell
    from ._ref import Ref
    from ._worker import Worker

__all__ = ("Actor", "SupervisionPolicy")


@dataclass(frozen=True, slots=True)
class SupervisionPolicy:
    """What happens when an actor's ``receive`` raises.

    * ``"restart"``: the instance is stopped (``on_stop``), a fresh one is made by the factory and
      started (``on_start``); the mailbox is kept, so no queued message is lost. More than
      ``max_restarts`` restarts within ``within_s`` seconds escalate instead.
    * ``"stop"``: the actor stops; queued and later asks get :class:`ActorStoppedError`.
    * ``"escalate"``: the worker fails: its ``async with`` raises :class:`ActorFailedError`
      chaining the cause and naming the actor.

    Whatever the strategy, an ask whose handling raised gets that error at the asker.
    """

    strategy: Literal["restart", "stop", "escalate"] = "escalate"
    max_restarts: int = 3
    within_s: float = 60.0

    def __post_init__(self) -> None:
        if self.strategy not in ("restart", "stop", "escalate"):
            raise ValueError(
                f"strategy must be 'restart', 'stop' or 'escalate'; got {self.strategy!r}"
            )
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0; got {self.max_restarts}")
        if self.within_s <= 0:
            raise ValueError(f"within_s must be > 0; got {self.within_s}")


class Actor:
    """Base class for actors. One instance handles one message at a time, never concurrently.

    Lifecycle, all on the hosting worker's event loop:

    1. the factory makes the instance; the kernel sets ``name``, ``ref`` and ``worker``;
    2. after a migration only: ``rehydrate(state)``;
    3. ``on_start()``; the actor counts as started (``spawn`` returns) only after it returns;
    4. ``receive(message)`` for every message, one at a time;
    5. ``on_stop()``, once, whenever the instance goes away: normal stop, worker exit, restart,
       failure, migration, and also when ``on_start`` or ``rehydrate`` raised half-way.
       ``on_stop`` must therefore tolerate a partially started instance (close what is open).
    """

    name: str
    ref: Ref
    worker: Worker
    _cell: Cell

    async def on_start(self) -> None:
        """Open resources; called once before the first message."""

    async def on_stop(self) -> None:
        """Close resources; called once when this instance goes away (see the class docstring)."""

    async def on_failure(self, exc: BaseException) -> None:
        """Called when ``receive`` raised, before the supervision policy decides."""

    async def receive(self, message: Any) -> Any:
        """Handle one message; the return value answers an ask (it is discarded for a tell)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement receive()")

    async def dehydrate(self) -> Any:
        """Return this actor's state for migration, as CBOR-encodable values (default None)."""
        return None

    async def rehydrate(self, state: Any) -> None:
        """Take over ``state`` from :meth:`dehydrate` on the target worker, before ``on_start``."""

    def hand_off(self, to_worker: int) -> None:
        """Stop once the message in hand is handled: a successor of the same name has taken
        (or is taking) over this actor's work on worker ``to_worker``.

        ``on_stop`` runs as usual; then every message still in the mailbox, and every message
        that reaches this worker for this name later, is forwarded to ``to_worker``, and this
        worker's directory and refs point there. Unlike :meth:`Worker.migrate` nothing is
        dehydrated: the actor hands its state over itself (a message to its successor), at a
        point of its own protocol's choosing. A pending :meth:`continue_with` is dropped.
        """
        if to_worker == self.worker.worker_id:
            raise ValueError(f"actor {self.name!r} cannot hand off to its own worker {to_worker}")
        self._cell.forward_to = int(to_worker)

    def continue_with(self, message: Any) -> None:
        """Deliver ``message`` to this actor once its mailbox has nothing else waiting.

        This is an idle continuation: every message in the mailbox (data and control messages
        alike) goes first, and the event loop gets a turn before the continuation is delivered,
        so a source can use it as its pull loop without starving barriers or other tasks. At most
        one continuation is pending; a second call before the first was delivered replaces it.
        """
        self._cell.continuation = (message,)
