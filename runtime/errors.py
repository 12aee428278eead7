"""Errors that reach the user as one clear line (no traceback)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = ["IRNError", "cli_entry"]


class IRNError(Exception):
    """A problem with the user's input or environment, reported as one line."""


F = TypeVar("F", bound=Callable[..., int])


def cli_entry(prog: str) -> Callable[[F], F]:
    """Wrap a CLI ``main``: IRNError and Ctrl-C become one line on stderr and a non-zero exit."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                return fn(*args, **kwargs)
            except IRNError as exc:
                print(f"{prog}: error: {exc}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130

        return inner  # type: ignore[return-value]

    return wrap
