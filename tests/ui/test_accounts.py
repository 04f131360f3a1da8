"""Accounts, sign-in rules and drafts as units, with clocks the tests control (no waiting 10 minutes)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyotp
import pytest

from appliance.store import Store
from appliance.store.crypto import BlobCipher, load_key
from appliance.store.db import data_paths
from appliance.ui.accounts import AccountError, AccountStore, Verdict
from appliance.ui.auth import Authenticator, AuthError

PIN = "24681357"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 14, 0, 0, tzinfo=timezone.utc)
        self.mono = 1000.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    with Store.open_data_dir(tmp_path):
        pass
    return tmp_path


@pytest.fixture
def cipher(data_dir: Path) -> BlobCipher:
    return BlobCipher(load_key(data_paths(data_dir)[1]))


def _code(secret: str, clock: Clock, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock.now + timedelta(seconds=30 * offset_steps))


def test_lockout_counts_expires_and_resets(data_dir: Path, cipher: BlobCipher) -> None:
    clock = Clock()
    with AccountStore.open_data_dir(data_dir, cipher, clock=clock.wall) as accounts:
        secret = accounts.add("o.lee", "Officer Lee", PIN).secret
        for n in range(1, 5):
            attempt = accounts.verify("o.lee", "11112222", _code(secret, clock))
            assert attempt.verdict == Verdict.WRONG and attempt.failures == n and not attempt.just_locked
        fifth = accounts.verify("o.lee", PIN, "000000")  # right PIN, wrong code: counts too
        assert fifth.just_locked and fifth.locked_until == clock.now + timedelta(minutes=10)
        assert accounts.verify("o.lee", PIN, _code(secret, clock)).verdict == Verdict.LOCKED
        clock.advance(9 * 60 + 59)
        assert accounts.verify("o.lee", PIN, _code(secret, clock)).verdict == Verdict.LOCKED
        clock.advance(2)
        ok = accounts.verify("o.lee", PIN, _code(secret, clock))
        assert ok.verdict == Verdict.OK and ok.officer is not None and ok.officer.failed_count == 0
        # The count starts afresh after the lock ran out: one failure is one, not six.
        clock.advance(60)
        assert accounts.verify("o.lee", "11112222", _code(secret, clock)).failures == 1


def test_a_code_is_accepted_once_and_secrets_are_not_stored_in_clear(data_dir: Path, cipher: BlobCipher) -> None:
    clock = Clock()
    with AccountStore.open_data_dir(data_dir, cipher, clock=clock.wall) as accounts:
        secret = accounts.add("o.moss", "Officer Moss", PIN).secret
        code = _code(secret, clock)
        assert accounts.verify("o.moss", PIN, code).verdict == Verdict.OK
        replay = accounts.verify("o.moss", PIN, code)
        assert replay.verdict == Verdict.WRONG and replay.reason == "code_reused"
        assert accounts.verify("o.moss", PIN, _code(secret, clock, 1)).verdict == Verdict.OK  # one step of drift
        assert accounts.verify("o.moss", PIN, _code(secret, clock, 3)).reason == "code"  # too far ahead
        with pytest.raises(AccountError, match="too easy"):
            accounts.add("o.weak", "", "123456")
        with pytest.raises(AccountError, match="6 to 16 digits"):
            accounts.add("o.short", "", "1234")
        with pytest.raises(AccountError, match="already has an account"):
            accounts.add("o.moss", "", PIN)
    raw = (data_dir / "accounts.db").read_bytes()
    assert secret.encode() not in raw and PIN.encode() not in raw and b"scrypt$" in raw
    assert (data_dir / "accounts.db").stat().st_mode & 0o077 == 0


def test_idle_lock_counts_actions_not_polls(data_dir: Path, cipher: BlobCipher) -> None:
    clock = Clock()

    def accounts() -> AccountStore:
        return AccountStore.open_data_dir(data_dir, cipher, clock=clock.wall)

    with accounts() as a:
        secret = a.add("o.nash", "Officer Nash", PIN).secret
    auth = Authenticator(accounts, lambda: Store.open_data_dir(data_dir), idle_seconds=30 * 60,
                         monotonic=clock.monotonic, wall=clock.wall)
    token, _ = auth.sign_in("o.nash", PIN, _code(secret, clock), "test")
    clock.advance(20 * 60)
    auth.session(token, action=True)  # an action at 20 min restarts the idle timer
    clock.advance(29 * 60)
    auth.session(token, action=False)  # polling does not
    clock.advance(60)
    with pytest.raises(AuthError) as err:
        auth.session(token, action=False)
    assert err.value.code == "session_locked" and "30 minutes" in str(err.value)
    with pytest.raises(ValueError):
        Authenticator(accounts, lambda: Store.open_data_dir(data_dir), idle_seconds=31 * 60)
    with Store.open_data_dir(data_dir) as store:
        actions = [r[0] for r in store.conn.execute("SELECT action FROM audit ORDER BY seq")]
    assert actions[-2:] == ["logon", "session_lock"]


def test_a_damaged_draft_is_set_aside_not_deleted(data_dir: Path, cipher: BlobCipher) -> None:
    from appliance.ui.drafts import DraftError, DraftStore

    drafts = DraftStore(data_dir, cipher)
    assert drafts.load() is None
    drafts.dir.mkdir(mode=0o700)
    drafts.path.write_bytes(b"\x01" + b"x" * 64)
    with pytest.raises(DraftError, match="moved to"):
        drafts.load()
    assert not drafts.path.exists()
    assert len(list(drafts.dir.glob("draft.bin.damaged-*"))) == 1


def test_roles_and_an_accounts_file_from_before_roles(data_dir: Path, cipher: BlobCipher) -> None:
    import sqlite3

    from appliance.ui.accounts import SCHEMA, totp_issuer

    # An accounts file written before roles existed: the column is added, everyone in it is an officer.
    old_schema = SCHEMA.replace(",\n    role TEXT NOT NULL DEFAULT 'officer'", "")
    assert "role" not in old_schema
    with sqlite3.connect(data_dir / "accounts.db") as conn:
        conn.execute(old_schema)
        conn.execute("INSERT INTO officers (officer_id, name, pin_hash, totp_secret, created_at) "
                     "VALUES ('o.old', 'Old', 'x', x'00', '2026-01-01T00:00:00.000000Z')")
    (data_dir / "accounts.db").chmod(0o600)
    with AccountStore.open_data_dir(data_dir, cipher) as accounts:
        assert accounts.get("o.old").role == "officer"
        issuer = totp_issuer("king-county", "desk-1")
        new = accounts.add("o.boss", "Sergeant", PIN, role="station-admin", issuer=issuer)
        assert accounts.get("o.boss").role == "station-admin"
        assert pyotp.parse_uri(new.uri).issuer == "Booking station king-county desk-1"
        with pytest.raises(AccountError, match="role"):
            accounts.add("o.chief", "", PIN, role="chief")
    assert totp_issuer("", "desk-1") == "Booking station desk-1"
