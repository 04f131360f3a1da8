"""Console accounts and sessions without a server: PIN rules, single-use codes, sealed secrets, the idle lock
and its audit entry, and the ``[console]`` table of county.toml."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyotp
import pytest

from sync.county.config import CountyConfigError, load_county_config
from sync.county.console.accounts import AccountError, AccountStore
from sync.county.console.auth import Authenticator, AuthError
from sync.county.console.settings import ConsoleSettings
from sync.county.gallery.store import SQLiteStore

NOW = datetime(2026, 12, 6, 4, 0, 0, tzinfo=timezone.utc)


def test_pin_rules_single_use_code_and_sealed_secret(tmp_path: Path) -> None:
    clock = [NOW]
    store = AccountStore(tmp_path / "acc.db", issuer="King County gallery console", clock=lambda: clock[0])
    for pin, why in (("12345", "6 to 16 digits"), ("123456", "too easy"), ("abcdefgh", "6 to 16 digits")):
        with pytest.raises(AccountError, match=why):
            store.add("u1", "U One", pin)
    secret = store.add("u1", "U One", "24681357")
    assert "issuer=King%20County%20gallery%20console" in secret.uri
    with pytest.raises(AccountError, match="already"):
        store.add("u1", "again", "24681357")
    code = pyotp.TOTP(secret.secret).at(NOW)
    assert store.verify("u1", "24681358", code).reason == "pin"
    assert store.verify("u1", "24681357", code).verdict == "ok"
    assert store.verify("u1", "24681357", code).reason == "code_reused"
    raw = sqlite3.connect(tmp_path / "acc.db").execute("SELECT totp_secret FROM users").fetchone()[0]
    assert secret.secret.encode() not in raw  # sealed, not stored in clear
    assert (tmp_path / "acc.db").stat().st_mode & 0o077 == 0
    assert (tmp_path / "acc.db.key").stat().st_mode & 0o077 == 0
    attempts = [store.verify("u1", "00000000", "000000") for _ in range(4)]  # the reused code was failure 1
    assert [a.failures for a in attempts] == [2, 3, 4, 5] and attempts[-1].just_locked
    assert store.get("u1").locked(clock[0])
    assert store.verify("u1", "24681357", pyotp.TOTP(secret.secret).at(NOW + timedelta(seconds=30))).verdict == "locked"
    clock[0] = NOW + timedelta(minutes=11)  # the lock runs out
    assert store.verify("u1", "24681357", pyotp.TOTP(secret.secret).at(clock[0])).verdict == "ok"
    store.close()


def test_idle_lock_ends_the_session_and_is_audited(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    SQLiteStore(db).close()
    with AccountStore(tmp_path / "acc.db", issuer="x") as accounts:
        secret = accounts.add("u2", "U Two", "97531864")
    clock = [1000.0]
    auth = Authenticator(tmp_path / "acc.db", "x", str(db), idle_seconds=60, monotonic=lambda: clock[0])
    token, _ = auth.sign_in("u2", "97531864", pyotp.TOTP(secret.secret).now(), "127.0.0.1")
    clock[0] += 59
    assert auth.session(token).user_id == "u2"  # an action: the idle timer starts again
    clock[0] += 59
    assert auth.session(token).user_id == "u2"
    clock[0] += 61
    with pytest.raises(AuthError) as err:
        auth.session(token)
    assert err.value.code == "session_locked"
    with SQLiteStore(db) as store:
        actions = [a.action for a in store.list_audit()]
    assert actions[:2] == ["console_session_lock", "console_logon"]


def test_console_table_in_county_toml(tmp_path: Path) -> None:
    path = tmp_path / "county.toml"
    path.write_text('[gallery]\ndb = "g.db"\n[console]\nport = 9000\ncounty = "King County"\naccounts = "a.db"\n')
    console = load_county_config(path).console
    assert (console.port, console.issuer, console.accounts) == (9000, "King County gallery console", tmp_path / "a.db")
    assert ConsoleSettings().accounts_path(str(tmp_path / "x" / "g.db")) == tmp_path / "x" / "console-accounts.db"
    for bad, why in (("idle_minutes = 45", "idle_minutes"), ("prot = 1", "unknown key"), ("port = -1", "port")):
        path.write_text(f"[console]\n{bad}\n")
        with pytest.raises(CountyConfigError, match=why):
            load_county_config(path)


def test_users_add_writes_the_qr_svg_and_refuses_bad_input(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sync.county.cli import main

    config = tmp_path / "county.toml"
    config.write_text(f'[gallery]\ndb = "{tmp_path / "g.db"}"\n[console]\ncounty = "Pierce County"\n')
    SQLiteStore(tmp_path / "g.db").close()

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        result = CliRunner().invoke(main, ["--config", str(config), *args], input=stdin)
        return result.exit_code, result.stdout, result.stderr

    svg = tmp_path / "qr.svg"
    code, out, _ = run("users", "add", "clerk.1", "--name", "A Clerk", "--pin-stdin", "--qr-svg", str(svg), "--json",
                       stdin="86420975\n")
    doc = json.loads(out)
    assert code == 0 and doc["qr_svg"] == str(svg) and "issuer=Pierce%20County%20gallery%20console" in doc["totp_uri"]
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    assert (tmp_path / "console-accounts.db").exists()  # beside the SQLite gallery
    code, _, err = run("users", "add", "clerk.1", "--pin-stdin", stdin="86420975\n")
    assert code == 2 and "already has an account" in err and err.count("\n") == 1
    code, _, err = run("users", "add", "clerk 2", "--pin-stdin", stdin="86420975\n")
    assert code == 2 and "user id" in err
    code, out, _ = run("users", "list", "--json")
    assert [u["user_id"] for u in json.loads(out)["users"]] == ["clerk.1"]
    code, out, _ = run("audit", "list", "--json")
    assert [(e["action"], e["subject"]) for e in json.loads(out)["entries"]] == [("console_account_create", "clerk.1")]


def test_serve_without_a_gallery_database_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sync.county.cli import main

    monkeypatch.delenv("BOOKING_GALLERY_CONFIG", raising=False)
    missing = tmp_path / "nowhere" / "g.db"
    result = CliRunner().invoke(main, ["serve", "--db", str(missing), "--port", "0"])
    assert result.exit_code == 2 and str(missing) in result.stderr and result.stderr.count("\n") == 1
    assert not missing.parent.exists()  # nothing made
