"""Checked argument types shared by the benchmarks' command lines: a bad value stops at the
boundary with a message naming it (``argument --keys: expected an integer >= 1, got '-1'``)
instead of a traceback from deep inside a run."""

from __future__ import annotations

import argparse
import math
from typing import Any

from shoal.runtime._cli import _worker_count as worker_count

__all__ = ("count", "exponent", "interval", "megabytes", "multiple_of", "rate", "workers")

#: A worker count from 1 to the most a job takes: ``shoal run --workers``' own check.
workers = worker_count


def _number(text: str, kind: type[float] | type[int], least: float, what: str) -> Any:
    """``text`` as ``kind``, finite and above ``least`` (at least ``least`` when it is not 0)."""
    problem = f"expected {what}, got {text!r}"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    if not math.isfinite(value) or not (value > least if least == 0 else value >= least):
        raise argparse.ArgumentTypeError(problem)
    return value


def count(text: str) -> int:
    """An integer >= 1 (records, keys, splits, workers, rounds)."""
    return int(_number(text, int, 1, "an integer >= 1"))


def exponent(text: str) -> float:
    """A Zipf exponent >= 0 (0: uniform)."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    return float(_number(text, float, 0, "a Zipf exponent >= 0 (0: uniform)"))


def interval(text: str) -> float | None:
    """Seconds > 0 between checkpoints, or ``off`` (None)."""
    return None if text == "off" else float(_number(text, float, 0, "seconds > 0 or 'off'"))


def megabytes(text: str) -> int | None:
    """A state memory budget in MiB, as bytes (at least one), or ``off`` (None)."""
    if text == "off":
        return None
    size = int(_number(text, float, 0, "megabytes (MiB) > 0 or 'off'") * 1024 * 1024)
    if size < 1:
        raise argparse.ArgumentTypeError(f"expected at least one byte, got {text!r} MiB")
    return size


def rate(text: str) -> float:
    """Records per second > 0 (a paced source)."""
    return float(_number(text, float, 0, "records per second > 0"))


def multiple_of(step: int) -> Any:
    """An integer >= ``step`` that is a multiple of it (whole batches)."""

    def check(text: str) -> int:
        value = count(text)
        if value % step:
            raise argparse.ArgumentTypeError(
                f"expected a multiple of {step:,} (whole batches), got {text!r}"
            )
        return value

    return check
