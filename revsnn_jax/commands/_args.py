"""Argument validation shared by every ``revsnn`` command.

Two ways to reject bad input, both ending as one line on stderr and exit status 2 (never a
traceback):

* argparse ``type=`` functions below (``positive_int``, ``int_list``, ``names_from(...)``): a
  bad value raises :class:`argparse.ArgumentTypeError`, which argparse prints as
  ``revsnn CMD: error: argument --FLAG: ...``;
* :class:`UsageError`, raised from a command's ``run`` for checks that need more than one value
  (or a registry that is only known once the command runs); :func:`revsnn_jax.cli.main` prints
  it as ``revsnn CMD: error: ...`` and returns 2.

Anything else a command raises is an internal failure and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator


class UsageError(Exception):
    """Invalid command-line input; the message names the argument and what it accepts."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers, e.g. ``8,16``."""
    try:
        values = tuple(positive_int(v) for v in text.split(",") if v.strip())
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 8,16, got {text!r} ({err})"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers such as "
                                         "8,16, got nothing")
    return values


def names_from(known: Iterable[str] | Callable[[], Iterable[str]], what: str
               ) -> Callable[[str], tuple[str, ...]]:
    """A ``type=`` for comma-separated names, each one of ``known`` (a collection, or a function
    returning it, called only when the argument is given)."""

    def parse(text: str) -> tuple[str, ...]:
        allowed = list(known() if callable(known) else known)
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            got = f"unknown {what} {', '.join(map(repr, unknown))}" if unknown else "no name"
            raise argparse.ArgumentTypeError(f"{got}; choose from {', '.join(allowed)}")
        return names

    return parse


@contextlib.contextmanager
def concise_warnings(command: str, categories: tuple[type[Warning], ...]) -> Iterator[None]:
    """Print warnings of ``categories`` (revsnn's own, e.g. a corrupt checkpoint set aside) as
    one ``revsnn COMMAND: warning: ...`` line on stderr instead of Python's file:line form;
    other warnings are shown as usual."""
    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, categories):
                print(f"revsnn {command}: warning: {message}", file=file or sys.stderr)
            else:
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
