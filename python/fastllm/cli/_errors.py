"""What every `fastllm` command shares: bad input becomes one line and exit status 1."""

from __future__ import annotations

import functools
import warnings

import click


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # e.g. a checkpoint without its .sha256: "Warning: ..." on stderr, not Python's two-line form
    click.echo(f"Warning: {message}", err=True)


def user_errors(fn):
    """Turn the exceptions bad input raises into a one-line message and exit status 1, and
    warnings into one "Warning: ..." line each.

    FloatingPointError is `fastllm.train.TrainingDiverged` (a learning rate too high for the run):
    its message names the step and the last checkpoint written before it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            try:
                return fn(*args, **kwargs)
            except (ValueError, TypeError, OSError, FloatingPointError) as e:
                raise click.ClickException(str(e)) from None

    return wrapper


def report_invalid(invalid: list[str]) -> None:
    """The first ten skipped records on stderr, and how many more there were."""
    for line in invalid[:10]:
        click.echo(f"  invalid: {line}", err=True)
    if len(invalid) > 10:
        click.echo(f"  ... and {len(invalid) - 10} more invalid records", err=True)
