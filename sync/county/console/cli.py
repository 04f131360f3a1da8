"""``booking-gallery serve``, ``users add|list|unlock`` and ``audit list``: the county console's commands.

Exit codes: 0 done, 1 a check failed (an unknown user to unlock), 2 a usage or input error (a bad PIN or
user id, an existing account, an unreadable accounts file or database), one line each.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from sync.county.config import ConfigSetupError, current_config
from sync.county.console.accounts import AccountError, AccountStore, UnknownUserError
from sync.county.gallery.cli import _store, db_option


class InputError(click.ClickException):
    exit_code = 2


def _accounts_option(func: Any) -> Any:
    return click.option("--accounts", "accounts", default=None, envvar="BOOKING_CONSOLE_ACCOUNTS",
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="Console accounts file (default: [console] accounts, else console-accounts.db "
                             "beside a SQLite gallery).")(func)


def _open_accounts(accounts: Path | None, db_url: str) -> AccountStore:
    settings = current_config().console
    path = accounts or settings.accounts_path(db_url)
    try:
        return AccountStore(path, issuer=settings.issuer)
    except AccountError as exc:
        raise ConfigSetupError(str(exc)) from None


def _audit(db_url: str, action: str, subject: str, details: dict[str, Any]) -> None:
    import getpass

    with _store(db_url) as store:
        store.audit(f"admin:{getpass.getuser()}", action, subject, details)


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: [console] host, else 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(0, 65535),
              help="Port (default: [console] port, else 8600).")
@click.option("--bundle", "bundle_dir", default=None, envvar="BOOKING_MODEL_BUNDLE",
              type=click.Path(file_okay=False, path_type=Path), help="Model bundle for search by photo.")
@_accounts_option
@db_option()
def serve_cmd(host: str | None, port: int | None, bundle_dir: Path | None, accounts: Path | None, db_url: str) -> None:
    """Serve the county console (records, face search, fleet, audit) and its JSON API under /api/v1."""
    from sync.county.console.app import build_console, run
    from sync.county.console.service import ConsoleService

    config = current_config()
    settings = config.console.with_overrides(host=host, port=port)
    with _store(db_url):
        pass  # the gallery database must exist: say so now, not on the first page
    _open_accounts(accounts, db_url).close()
    service = ConsoleService(db_url, config.search, export_folder=config.export.folder, bundle_dir=bundle_dir)
    console = build_console(service, accounts or settings.accounts_path(db_url), settings.issuer,
                            idle_seconds=settings.idle_minutes * 60, max_body=int(settings.max_upload_mb * 1e6))
    click.echo(f"County console on http://{settings.host}:{settings.port}/ (Ctrl-C to stop)", err=True)
    run(console, settings.host, settings.port)


@click.group("users")
def users_group() -> None:
    """Console accounts: PIN + TOTP sign-in for county staff."""


def _qr(uri: str, svg: Path | None) -> str | None:
    import qrcode
    import qrcode.image.svg

    if svg is not None:
        qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage).save(str(svg))
        return str(svg)
    if sys.stdout.isatty():
        code = qrcode.QRCode(border=2)
        code.add_data(uri)
        code.print_ascii(tty=True)
    return None


@users_group.command("add")
@click.argument("user_id")
@click.option("--name", default=None, help="Full name (default: the user id).")
@click.option("--pin-stdin", is_flag=True, help="Read the PIN from the first line of stdin (scripts).")
@click.option("--qr-svg", "qr_svg", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the authenticator QR code to this SVG file (else it is drawn in a terminal).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: user_id, totp_secret, totp_uri, qr_svg.")
@_accounts_option
@db_option()
def users_add(user_id: str, name: str | None, pin_stdin: bool, qr_svg: Path | None, as_json: bool,
              accounts: Path | None, db_url: str) -> None:
    """Create a console account; print its TOTP secret and QR code once (enrol it in an authenticator app)."""
    pin = sys.stdin.readline().strip() if pin_stdin else click.prompt("PIN (6-16 digits)", hide_input=True,
                                                                     confirmation_prompt=True)
    with _open_accounts(accounts, db_url) as store:
        try:
            secret = store.add(user_id, name or user_id, pin)
        except AccountError as exc:
            raise InputError(str(exc)) from None
    _audit(db_url, "console_account_create", user_id, {"name": name or user_id})
    written = _qr(secret.uri, qr_svg) if not as_json or qr_svg else None
    if as_json:
        click.echo(json.dumps({"user_id": secret.user_id, "totp_secret": secret.secret, "totp_uri": secret.uri,
                               "qr_svg": written}))
        return
    click.echo(f"TOTP for {secret.user_id} (shown once; enrol it in the user's authenticator app now):")
    click.echo(f"  URI:    {secret.uri}")
    click.echo(f"  secret: {secret.secret}")
    if written:
        click.echo(f"  QR code: {written}")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {users: [...]}.")
@_accounts_option
@db_option()
def users_list(as_json: bool, accounts: Path | None, db_url: str) -> None:
    """Every console account with its lock state."""
    now = datetime.now(timezone.utc)
    with _open_accounts(accounts, db_url) as store:
        users = store.users()
    if as_json:
        click.echo(json.dumps({"users": [u.to_json(now) for u in users]}))
        return
    for u in users:
        state = f"LOCKED until {u.locked_until:%H:%M} UTC" if u.locked(now) else "active"
        last = f"{u.last_logon_at:%Y-%m-%d %H:%M}" if u.last_logon_at else "never"
        click.echo(f"{u.user_id:20} {u.name:30} {state:26} last sign-in {last}")
    if not users:
        click.echo("No console accounts yet: booking-gallery users add USER_ID")


@users_group.command("unlock")
@click.argument("user_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the account after unlocking.")
@_accounts_option
@db_option()
def users_unlock(user_id: str, as_json: bool, accounts: Path | None, db_url: str) -> None:
    """End an account's lock and reset its failure count (exit 1 if there is no such account)."""
    with _open_accounts(accounts, db_url) as store:
        try:
            user = store.unlock(user_id)
        except UnknownUserError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(1) from None
    _audit(db_url, "console_account_unlock", user_id, {})
    if as_json:
        click.echo(json.dumps(user.to_json(datetime.now(timezone.utc))))
    else:
        click.echo(f"Unlocked {user_id}.")


def add_audit_list(group: click.Group) -> None:
    """``audit list`` in the ``audit`` group (made here when no other command made it first)."""
    audit = group.commands.get("audit")
    if not isinstance(audit, click.Group):
        audit = click.Group("audit", help="The county audit log: sign-ins, searches, purges, imports.")
        group.add_command(audit)
    audit.add_command(audit_list)


@click.command("list")
@click.option("--action", default=None, help="Only this action (console_search, console_logon, purge, ...).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {entries: [...]}, newest first.")
@db_option()
def audit_list(action: str | None, limit: int, as_json: bool, db_url: str) -> None:
    """The newest audit entries: who did what, on which subject, and why."""
    with _store(db_url) as store:
        entries = store.list_audit(action=action, limit=limit)
    if as_json:
        click.echo(json.dumps({"entries": [{"id": a.id, "at": a.at.isoformat(), "actor": a.actor, "action": a.action,
                                            "subject": a.subject, "details": a.details} for a in entries]}))
        return
    for a in entries:
        why = a.details.get("reason")
        click.echo(f"{a.at:%Y-%m-%d %H:%M:%S}Z  {a.actor:16} {a.action:22} {a.subject}"
                   + (f"  reason: {why}" if why else ""))
    if not entries:
        click.echo("No audit entries.")
