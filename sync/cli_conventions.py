"""The conventions both command lines (`booking-station`, `booking-gallery`) share.

* ``--json`` prints exactly one JSON document on stdout: an object (lists go inside it, e.g.
  ``{"records": [...]}``), so a script reads it with one ``json.loads``. Long-running commands that
  stream print JSON lines instead and say so in their help.
* A flag keeps one name for one thing on both CLIs; a renamed flag keeps its old name, hidden, for one
  release (:func:`renamed_option`).
* Exit status 0 ok, 1 a check failed, 2 a usage or input error.

It lives under ``sync`` but outside ``sync.protocol`` (which is the wire format) and outside either side,
so both the station's and the county's CLI modules may import it under the import contracts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import click

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


def json_option(help_text: str = "print one JSON object, for scripts") -> Callable[[Any], Any]:
    """The one ``--json`` flag (dest ``as_json``) of every command that prints a result."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def echo_json(document: dict[str, Any]) -> None:
    """Print ``document`` as the command's one JSON document (one line, keys as given)."""
    click.echo(json.dumps(document, default=str))


def echo_result(as_json: bool, document: dict[str, Any], lines: Iterable[str]) -> None:
    """Print the result of a command: ``document`` as JSON with ``--json``, else ``lines`` for people."""
    if as_json:
        echo_json(document)
        return
    for line in lines:
        click.echo(line)


def renamed_option(new: str, old: str, dest: str, *, required: bool = False, short: str | None = None,
                   **kwargs: Any) -> Callable[[Any], Any]:
    """An option under its new name ``new`` that still takes its old name ``old`` for one release.

    The old name is hidden from ``--help`` and prints a one-line warning on stderr; giving both with
    different values is a usage error (exit 2). ``required`` is checked here rather than by click, so
    that the old name alone satisfies it. ``short`` is a one-letter name the new option also takes (``-o``).
    Other ``kwargs`` go to the new option (``type``, ``help``, ...).
    """
    meta_key = f"renamed-option:{dest}"
    own_callback = kwargs.pop("callback", None)

    def conflict(ctx: click.Context, first: Any, second: Any) -> None:
        if first is not None and second is not None and first != second:
            raise click.UsageError(f"{old} (the old name of {new}) and {new} give different values; use {new}", ctx)

    def old_value(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None:
            return
        click.echo(f"warning: {old} is the old name of {new} and goes away in the next release", err=True)
        conflict(ctx, ctx.params.get(dest), value)
        ctx.meta[meta_key] = value
        if dest in ctx.params:  # the new option came first on the command line
            ctx.params[dest] = value

    def new_value(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        given = ctx.meta.get(meta_key)
        conflict(ctx, value, given)
        value = value if value is not None else given
        if value is None and required:
            raise click.MissingParameter(ctx=ctx, param=param)
        return own_callback(ctx, param, value) if own_callback is not None else value

    def decorate(func: Any) -> Any:
        names = (short, new) if short else (new,)
        func = click.option(*names, dest, default=None, callback=new_value, **kwargs)(func)
        return click.option(old, f"old_{dest}", type=kwargs.get("type"), default=None, hidden=True,
                            expose_value=False, callback=old_value)(func)

    return decorate


class OneLineError(click.ClickException):
    """A failed command's message as the one line both CLIs print: ``error: ...`` on stderr."""

    def __init__(self, message: str, exit_code: int = EXIT_CHECK_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class RootGroup(click.Group):
    """The root group of a CLI: a command's ``click.ClickException`` prints ``error: ...`` like every other
    error of both CLIs (click's own ``Error: ...`` otherwise), with the same exit status. Usage errors
    keep click's usage text and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.UsageError, OneLineError):
            raise
        except click.ClickException as exc:
            raise OneLineError(exc.format_message(), exc.exit_code) from None
