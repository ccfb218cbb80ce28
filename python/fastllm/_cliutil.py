"""What every `fastllm` command shares: bad input becomes one line and exit status 1."""

from __future__ import annotations

import functools

import click


def user_errors(fn):
    """Turn the exceptions bad input raises into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, OSError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper
