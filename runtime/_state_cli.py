"""``shoal state``: offline commands over savepoints and checkpoint directories.

Thin wrappers over ``shoal.storage``'s savepoint functions; the one thing they add is the
runtime's key hash (:func:`key_group_of_bytes`), which storage takes as ``group_of``::

    shoal state inspect PATH [--epoch N] [--key KEY] [--json]   what a savepoint or checkpoint holds
    shoal state verify PATH [--json]                every file's size and checksum
    shoal state rewrite PATH --key-groups N OUT     rehash every key into N key groups
    shoal state savepoint CHECKPOINT_DIR OUT [--epoch N]   a complete checkpoint, as a savepoint

PATH is a local directory: a savepoint (it holds ``manifest.cbor``) or, for ``inspect`` and
``verify``, a checkpoint directory (it holds ``manifests/``). ``inspect`` reads the newest
complete checkpoint that verifies (or ``--epoch N``); ``verify`` checks every complete one.

Exit status: 0 when all is well; 1 when data is damaged or missing (a file fails its checksum, a
checkpoint directory has no complete checkpoint), naming each bad file. A damaged newest
checkpoint is damage too: ``inspect`` then shows the newest one that verifies, says on stderr
which were skipped and why, and exits 1 (a script must not take an older checkpoint for the
latest); ``savepoint`` refuses (exit 1) and names the ``--epoch`` to give for the newest good
one, so a savepoint of older state is only ever made on purpose. 2 on bad usage (a missing
path, a directory that is not a savepoint, a bad ``--key``, ``--key-groups`` or ``--epoch``, an
``OUT`` that exists and is not empty), with one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shoal.storage import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointStore,
    InvalidKeyError,
    Manifest,
    SavepointInfo,
    check_key,
    encode_key,
    inspect_savepoint,
    read_savepoint,
    rewrite_savepoint,
    savepoint_from_checkpoint,
    verify_checkpoints,
    verify_savepoint,
)

from ._keys import MAX_KEY_GROUPS, key_group_of_bytes

__all__ = ("add_state_parser", "parse_key", "run_state")

EXIT_OK, EXIT_DAMAGED, EXIT_USAGE = 0, 1, 2
SAVEPOINT_MANIFEST = "manifest.cbor"
CHECKPOINT_MANIFESTS = "manifests"

_KEY_HELP = (
    "also print the values stored for KEY. KEY is parsed as a JSON value when it parses "
    '(42 is the int key 42, \'"42"\' the string "42", \'["a", 1]\' the tuple key '
    '("a", 1)), else taken as a string (alice is "alice")'
)


class StateCommandError(Exception):
    """A ``shoal state`` command cannot do what was asked: ``status`` is its exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def _key_groups(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_KEY_GROUPS:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to {MAX_KEY_GROUPS}, got {text!r}"
        )
    return value


_EPOCH_HELP = (
    "of a checkpoint directory: use checkpoint N (one of its complete checkpoints) instead "
    "of the newest"
)


def _epoch(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a checkpoint epoch (1, 2, ...), got {text!r}")
    return value


def add_state_parser(commands: Any) -> None:
    """Add ``state`` and its subcommands to the ``shoal`` parser's subcommands."""
    state = commands.add_parser(
        "state",
        help="inspect, verify and rewrite savepoints and checkpoints offline",
        description="Offline commands over savepoints and checkpoint directories.",
    )
    sub = state.add_subparsers(
        dest="state_command", required=True, metavar="COMMAND", parser_class=type(state)
    )
    inspect = sub.add_parser(
        "inspect",
        help="operators, states, key groups, entry counts and sizes (and one key's values)",
        description=(
            "List what a savepoint holds: operators, states, the key groups with state, "
            "their entry counts and sizes. PATH may also be a checkpoint directory: its "
            "newest complete checkpoint is inspected (sizes are then of its files there, a "
            "full and its deltas); when newer ones are damaged, the newest that verifies is "
            "shown, the damage named on stderr, and the exit status is 1."
        ),
    )
    inspect.add_argument("path", metavar="PATH", help="a savepoint or checkpoint directory")
    inspect.add_argument("--epoch", type=_epoch, metavar="N", help=_EPOCH_HELP)
    inspect.add_argument("--key", metavar="KEY", help=_KEY_HELP)
    inspect.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    verify = sub.add_parser(
        "verify",
        help="check every file's size and checksum",
        description=(
            "Check a savepoint's manifest and every file's size and checksum; or, for a "
            "checkpoint directory, every complete checkpoint's. Exit 0 when all are good, 1 "
            "naming each damaged file (and, for a checkpoint directory, the checkpoints it "
            "damages and the newest one that verifies)."
        ),
    )
    verify.add_argument("path", metavar="PATH", help="a savepoint or checkpoint directory")
    verify.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    rewrite = sub.add_parser(
        "rewrite",
        help="rehash every key into another number of key groups",
        description=(
            "Write a copy of the savepoint PATH at OUT with every key rehashed into N key "
            "groups (the runtime's key hash). OUT must not exist or be an empty directory."
        ),
    )
    rewrite.add_argument("path", metavar="PATH", help="a savepoint directory")
    rewrite.add_argument(
        "--key-groups",
        type=_key_groups,
        required=True,
        metavar="N",
        help=f"the new key-group count (1 to {MAX_KEY_GROUPS})",
    )
    rewrite.add_argument("out", metavar="OUT", help="where to write the new savepoint")
    savepoint = sub.add_parser(
        "savepoint",
        help="materialize the latest complete checkpoint as a savepoint",
        description=(
            "Write the newest complete checkpoint of CHECKPOINT_DIR (full files and deltas), "
            "or the one --epoch names, as a self-contained savepoint at OUT, which must not "
            "exist or be empty. When the newest is damaged it refuses (exit 1) and names the "
            "newest that verifies: give it with --epoch to save older state on purpose."
        ),
    )
    savepoint.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR")
    savepoint.add_argument("out", metavar="OUT", help="where to write the savepoint")
    savepoint.add_argument("--epoch", type=_epoch, metavar="N", help=_EPOCH_HELP)


def parse_key(text: str) -> Any:
    """Parse ``--key``: a JSON value when ``text`` parses as one, else the string itself.

    JSON arrays become tuples (a tuple key), also nested ones.

    Raises:
        StateCommandError: The parsed value is not a valid key (a float, a bool, null, ...).
    """
    try:
        value = json.loads(text)
    except ValueError:
        return text

    def tuples(item: Any) -> Any:
        return tuple(tuples(x) for x in item) if isinstance(item, list) else item

    key = tuples(value)
    try:
        check_key(key)
    except InvalidKeyError as exc:
        raise StateCommandError(
            f"--key {text} parses as JSON to an invalid key: {exc}; quote it as a JSON "
            f"string ('\"...\"') to look up a string"
        ) from None
    return key


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    """A complete checkpoint of a checkpoint directory that verifies.

    ``skipped``: why each newer checkpoint was passed over (damaged); empty when this is the
    newest, or the one asked for by epoch.
    """

    store: CheckpointStore
    manifest: Manifest
    skipped: tuple[str, ...]


def _directory(path: str) -> str:
    """``"savepoint"`` or ``"checkpoint"``: what the directory ``path`` is.

    Raises:
        StateCommandError: It does not exist or is neither.
    """
    if not os.path.exists(path):
        raise StateCommandError(f"{path}: no such file or directory")
    if not os.path.isdir(path):
        raise StateCommandError(f"{path}: not a directory; give a savepoint directory")
    if os.path.isfile(os.path.join(path, SAVEPOINT_MANIFEST)):
        return "savepoint"
    if os.path.isdir(os.path.join(path, CHECKPOINT_MANIFESTS)):
        return "checkpoint"
    raise StateCommandError(
        f"{path}: not a savepoint (no {SAVEPOINT_MANIFEST}) nor a checkpoint directory "
        f"(no {CHECKPOINT_MANIFESTS}/)"
    )


def _savepoint_only(path: str, command: str) -> None:
    if _directory(path) == "checkpoint":
        raise StateCommandError(
            f"{path} is a checkpoint directory; `shoal state {command}` takes a savepoint: "
            f"make one first with `shoal state savepoint {path} OUT`"
        )


def _latest_checkpoint(path: str, epoch: int | None = None) -> _Checkpoint:
    """Open the checkpoint directory ``path`` and find its newest complete checkpoint that
    verifies, or checkpoint ``epoch``.

    Raises:
        StateCommandError: ``path`` is not a checkpoint directory, or has no checkpoint
            ``epoch`` (2); it has no complete checkpoint that verifies, or checkpoint
            ``epoch`` is damaged (1, with why).
    """
    if _directory(path) == "savepoint":
        raise StateCommandError(f"{path} is a savepoint, not a checkpoint directory")
    store = CheckpointStore(path)
    if epoch is not None:
        epochs = store.epochs()
        if epoch not in epochs:
            have = ", ".join(map(str, epochs)) or "none"
            raise StateCommandError(
                f"{path} has no complete checkpoint {epoch}; its complete checkpoints: {have}"
            )
        try:
            manifest = store.read_manifest(epoch)
            store.verify(manifest)
        except CheckpointCorruptError as exc:
            raise StateCommandError(
                f"{path}: checkpoint {epoch} is damaged: {exc}", EXIT_DAMAGED
            ) from exc
        return _Checkpoint(store, manifest, ())
    skipped: list[str] = []
    found = store.latest_complete(
        on_skip=lambda epoch, exc: skipped.append(f"checkpoint {epoch} skipped: {exc}")
    )
    if found is None:
        why = "".join(f"; {line}" for line in skipped)
        raise StateCommandError(f"{path}: no complete checkpoint{why}", EXIT_DAMAGED)
    return _Checkpoint(store, found, tuple(skipped))


def _fresh_out(out: str) -> None:
    if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
        raise StateCommandError(f"{out} exists and is not empty; choose a new OUT or delete it")


def plain(value: Any) -> Any:
    """``value`` as JSON-able data: tuples and sets become lists, bytes ``{"bytes": hex}``,
    a dict with keys other than str a list of ``[key, value]`` pairs, anything else its repr."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(x) for x in value]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: plain(v) for k, v in value.items()}
        return [[plain(k), plain(v)] for k, v in value.items()]
    return repr(value)


# inspect


def _inspect(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    key = None if args.key is None else parse_key(args.key)
    kind = _directory(args.path)
    sizes: dict[tuple[str, int], int] | None = None
    skipped: tuple[str, ...] = ()
    if kind == "savepoint" and args.epoch is not None:
        raise StateCommandError(
            f"{args.path} is a savepoint (one checkpoint); --epoch picks a checkpoint of a "
            "checkpoint directory"
        )
    try:
        if kind == "savepoint":
            info = inspect_savepoint(args.path, key=key, group_of=key_group_of_bytes)
        else:
            latest = _latest_checkpoint(args.path, args.epoch)
            skipped = latest.skipped
            sizes = {where: group.size for where, group in latest.manifest.groups.items()}
            with tempfile.TemporaryDirectory(prefix="shoal-inspect-") as scratch:
                copy = os.path.join(scratch, "savepoint")
                savepoint_from_checkpoint(latest.store, latest.manifest, copy)
                info = inspect_savepoint(copy, key=key, group_of=key_group_of_bytes)
    except CheckpointCorruptError as exc:
        raise StateCommandError(f"{args.path}: damaged: {exc}", EXIT_DAMAGED) from exc
    # What is shown is good data, but not the newest: the directory is damaged (exit 1).
    status = EXIT_DAMAGED if skipped else EXIT_OK
    return status, _inspect_report(args.path, kind, info, key, sizes, skipped, args.epoch)


def _inspect_report(
    path: str,
    kind: str,
    info: SavepointInfo,
    key: Any,
    sizes: Mapping[tuple[str, int], int] | None,
    skipped: tuple[str, ...],
    epoch_asked: int | None,
) -> dict[str, Any]:
    operators = []
    for operator, states in info.operators.items():
        groups: list[dict[str, Any]] = []
        for group in info.groups:
            if group.operator != operator:
                continue
            size = group.bytes if sizes is None else sizes.get((operator, group.key_group), 0)
            if group.entries or size:
                groups.append(
                    {
                        "key_group": group.key_group,
                        "entries": group.entries,
                        "bytes": size,
                        "entries_by_state": dict(group.entries_by_state),
                    }
                )
        operators.append(
            {
                "name": operator,
                "states": [
                    {
                        "name": state["name"],
                        "kind": state["kind"],
                        "entries": sum(g["entries_by_state"].get(state["name"], 0) for g in groups),
                    }
                    for state in states
                ],
                "entries": sum(g["entries"] for g in groups),
                "bytes": sum(g["bytes"] for g in groups),
                "key_groups": groups,
            }
        )
    report: dict[str, Any] = {
        "path": path,
        "kind": kind,
        "epoch": info.epoch,
        "num_key_groups": info.num_key_groups,
        "operators": operators,
        "positions": info.positions,
        "skipped": list(skipped),
        "epoch_asked": epoch_asked,
        "key": None,
    }
    if key is not None:
        report["key"] = {
            "key": key,
            "key_group": key_group_of_bytes(encode_key(key), info.num_key_groups),
            "values": [
                {"operator": operator, "state": state, "value": value}
                for (operator, state), value in sorted(info.values.items())
            ],
        }
    return report


def _entries(count: int) -> str:
    return f"{count:,} {'entry' if count == 1 else 'entries'}"


def _print_inspect(report: dict[str, Any]) -> None:
    what = "savepoint" if report["kind"] == "savepoint" else "checkpoint directory"
    if report["kind"] == "savepoint":
        latest = ""
    elif report["skipped"]:
        latest = ", the newest complete checkpoint that verifies (newer ones are damaged)"
    elif report["epoch_asked"]:
        latest = ", as asked"
    else:
        latest = ", the latest complete checkpoint"
    print(
        f"{what} {report['path']}: epoch {report['epoch']}{latest}, "
        f"{report['num_key_groups']} key groups"
    )
    for operator in report["operators"]:
        print(
            f"operator {operator['name']}: {_entries(operator['entries'])}, "
            f"{operator['bytes']:,} bytes in {len(operator['key_groups'])} of "
            f"{report['num_key_groups']} key groups"
        )
        for state in operator["states"]:
            print(f"  state {state['name']} ({state['kind']}): {_entries(state['entries'])}")
        for group in operator["key_groups"]:
            by_state = ", ".join(f"{s} {n:,}" for s, n in group["entries_by_state"].items())
            print(
                f"  key group {group['key_group']}: {_entries(group['entries'])} "
                f"({by_state}), {group['bytes']:,} bytes"
            )
    found = report["key"]
    if found is None:
        return
    print(f"key {found['key']!r}: key group {found['key_group']}")
    if not found["values"]:
        print("  no state holds a value for it")
    for value in found["values"]:
        print(f"  {value['operator']}.{value['state']} = {value['value']!r}")


# verify, rewrite, savepoint


def _verify(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    if _directory(args.path) == "checkpoint":
        return _verify_checkpoints(args.path)
    report = verify_savepoint(args.path)
    return (EXIT_OK if report.ok else EXIT_DAMAGED), {
        "path": args.path,
        "kind": "savepoint",
        "ok": report.ok,
        "files": report.files,
        "bytes": report.bytes,
        "problems": list(report.problems),
    }


def _verify_checkpoints(path: str) -> tuple[int, dict[str, Any]]:
    """Every complete checkpoint of a checkpoint directory, verified: ok only when each is
    (a damaged newest one is damage even when an older one would restore)."""
    reports = verify_checkpoints(path)
    checkpoints: list[dict[str, Any]] = [
        {
            "epoch": epoch,
            "ok": report.ok,
            "files": report.files,
            "bytes": report.bytes,
            "problems": list(report.problems),
        }
        for epoch, report in reports.items()
    ]
    good = [epoch for epoch, report in reports.items() if report.ok]
    ok = bool(reports) and len(good) == len(reports)
    problems = list(dict.fromkeys(p for report in reports.values() for p in report.problems))
    if not checkpoints:
        problems = ["no complete checkpoint (no manifest in manifests/)"]
    return (EXIT_OK if ok else EXIT_DAMAGED), {
        "path": path,
        "kind": "checkpoint",
        "ok": ok,
        "checkpoints": checkpoints,
        "newest_good": max(good, default=None),
        "problems": problems,
    }


def _print_verify(report: dict[str, Any]) -> None:
    if report["kind"] == "checkpoint":
        _print_verify_checkpoints(report)
        return
    if report["ok"]:
        print(f"savepoint {report['path']}: ok, {report['files']} files, {report['bytes']:,} bytes")
        return
    print(f"savepoint {report['path']}: DAMAGED, {len(report['problems'])} bad file(s)")
    for problem in report["problems"]:
        print(f"  {os.path.join(report['path'], problem)}")


def _print_verify_checkpoints(report: dict[str, Any]) -> None:
    path, checkpoints = report["path"], report["checkpoints"]
    if not checkpoints:
        print(f"checkpoint directory {path}: DAMAGED, {report['problems'][0]}")
        return
    count = f"{len(checkpoints)} complete checkpoint{'s' if len(checkpoints) != 1 else ''}"
    if report["ok"]:
        print(f"checkpoint directory {path}: ok, {count}")
    else:
        bad = sum(not c["ok"] for c in checkpoints)
        newest = report["newest_good"]
        print(
            f"checkpoint directory {path}: DAMAGED, {bad} of {count} damaged; "
            + (f"the newest that verifies is {newest}" if newest is not None else "none verifies")
        )
    for checkpoint in checkpoints:
        if checkpoint["ok"]:
            print(
                f"  checkpoint {checkpoint['epoch']}: ok, {checkpoint['files']} files, "
                f"{checkpoint['bytes']:,} bytes"
            )
            continue
        print(
            f"  checkpoint {checkpoint['epoch']}: DAMAGED, {len(checkpoint['problems'])} "
            "bad file(s)"
        )
        for problem in checkpoint["problems"]:
            print(f"    {os.path.join(path, problem)}")


def _written(path: str, manifest: Manifest) -> dict[str, Any]:
    files = list(manifest.files())
    return {
        "path": path,
        "epoch": manifest.epoch,
        "num_key_groups": manifest.num_key_groups,
        "files": len(files),
        "entries": sum(record.entries for record in files),
        "bytes": sum(record.size for record in files),
    }


def _rewrite(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    _savepoint_only(args.path, "rewrite")
    _fresh_out(args.out)
    try:
        before = read_savepoint(args.path)
        manifest = rewrite_savepoint(args.path, args.out, args.key_groups, key_group_of_bytes)
    except CheckpointCorruptError as exc:
        raise StateCommandError(f"{args.path}: damaged: {exc}", EXIT_DAMAGED) from exc
    report = _written(args.out, manifest)
    report["from"] = {"path": args.path, "num_key_groups": before.num_key_groups}
    return EXIT_OK, report


def _savepoint(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    latest = _latest_checkpoint(args.checkpoint_dir, args.epoch)
    if latest.skipped:
        # A savepoint of older state than the user believes is worse than none: only on
        # purpose, by epoch.
        why = "; ".join(latest.skipped)
        raise StateCommandError(
            f"{args.checkpoint_dir}: the newest checkpoint is damaged ({why}); the newest "
            f"that verifies is {latest.manifest.epoch}: to save it, give --epoch "
            f"{latest.manifest.epoch}",
            EXIT_DAMAGED,
        )
    _fresh_out(args.out)
    try:
        manifest = savepoint_from_checkpoint(latest.store, latest.manifest, args.out)
    except CheckpointCorruptError as exc:
        raise StateCommandError(f"{args.checkpoint_dir}: damaged: {exc}", EXIT_DAMAGED) from exc
    report = _written(args.out, manifest)
    report["from"] = {"path": args.checkpoint_dir, "epoch_asked": args.epoch}
    return EXIT_OK, report


def _print_rewrite(report: dict[str, Any]) -> None:
    print(
        f"savepoint {report['path']}: epoch {report['epoch']}, {report['num_key_groups']} key "
        f"groups (from {report['from']['num_key_groups']} in {report['from']['path']}), "
        f"{_entries(report['entries'])} in {report['files']} files, {report['bytes']:,} bytes"
    )


def _print_savepoint(report: dict[str, Any]) -> None:
    which = "checkpoint" if report["from"]["epoch_asked"] else "the latest complete checkpoint"
    print(
        f"savepoint {report['path']}: epoch {report['epoch']} ({which} "
        f"of {report['from']['path']}), {report['num_key_groups']} key groups, "
        f"{_entries(report['entries'])} in {report['files']} files, {report['bytes']:,} bytes"
    )


_Command = Callable[[argparse.Namespace], tuple[int, dict[str, Any]]]
_COMMANDS: dict[str, tuple[_Command, Callable[[dict[str, Any]], None]]] = {
    "inspect": (_inspect, _print_inspect),
    "verify": (_verify, _print_verify),
    "rewrite": (_rewrite, _print_rewrite),
    "savepoint": (_savepoint, _print_savepoint),
}


def run_state(args: argparse.Namespace) -> int:
    """Run a parsed ``shoal state`` command; return its exit status."""
    command, show = _COMMANDS[args.state_command]
    as_json = getattr(args, "json", False)
    try:
        status, report = command(args)
    except (StateCommandError, CheckpointError) as exc:
        failure = exc if isinstance(exc, StateCommandError) else StateCommandError(str(exc))
        print(f"shoal: error: {failure.message}", file=sys.stderr)
        if as_json:
            kind = "damaged" if failure.status == EXIT_DAMAGED else "usage"
            print(json.dumps({"ok": False, "error": {"kind": kind, "message": failure.message}}))
        return failure.status
    if as_json:
        print(json.dumps(plain(report)))
    else:
        show(report)
    skipped = report.get("skipped", ())
    for line in skipped:
        print(f"shoal: damaged: {line}", file=sys.stderr)
    if skipped:
        print(
            f"shoal: damaged: shown: checkpoint {report['epoch']}, the newest that verifies",
            file=sys.stderr,
        )
    return status
