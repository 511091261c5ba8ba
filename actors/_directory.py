"""The placement table: which worker hosts which actor name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ("Directory",)


class Directory(Mapping[str, int]):
    """A plain name -> worker id mapping, shared by all refs of one worker.

    The kernel places the actors it spawns here and moves entries when it migrates an actor; for
    actors hosted elsewhere, whoever owns placement (the job supervisor) calls :meth:`place`.
    Lookups happen on every remote send, so this is a bare dict underneath.
    """

    __slots__ = ("_table",)

    def __init__(self, table: Mapping[str, int] | None = None) -> None:
        self._table: dict[str, int] = dict(table or {})

    def place(self, name: str, worker_id: int) -> None:
        """Record that ``name`` lives on ``worker_id``."""
        self._table[name] = worker_id

    def remove(self, name: str) -> None:
        """Forget ``name`` (no error if it is unknown)."""
        self._table.pop(name, None)

    def lookup(self, name: str) -> int | None:
        """The worker id hosting ``name``, or None if unknown."""
        return self._table.get(name)

    def __getitem__(self, name: str) -> int:
        return self._table[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Directory({self._table!r})"
