"""The sign-in rule both account stores share (`sync.credentials.judge_attempt`): lock, count, PIN, code."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyotp

from sync.credentials import hash_pin, judge_attempt

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
PIN = "482913"
SECRET = pyotp.random_base32()
HASH = hash_pin(PIN)


def _judge(pin: str = PIN, code: str | None = None, *, last_step: int = 0, failures: int = 0,
           locked_until: datetime | None = None, opened: list[str] | None = None):
    def secret() -> str:
        if opened is not None:
            opened.append("opened")
        return SECRET

    code = pyotp.TOTP(SECRET).at(NOW) if code is None else code
    return judge_attempt(pin, code, NOW, pin_hash=HASH, secret=secret, last_step=last_step, failures=failures,
                         locked_until=locked_until, max_failures=5, lock_minutes=10)


def test_right_pin_and_code_sign_in_and_give_the_step_to_remember() -> None:
    judged = _judge(failures=3)
    step = int(NOW.timestamp()) // 30
    assert (judged.verdict, judged.reason, judged.step, judged.stored_failures) == ("ok", "ok", step, 0)
    reused = _judge(last_step=step)
    assert (reused.verdict, reused.reason, reused.failures) == ("wrong", "code_reused", 1)


def test_a_wrong_pin_never_opens_the_secret_and_a_wrong_code_counts() -> None:
    opened: list[str] = []
    judged = _judge(pin="999999", opened=opened)
    assert (judged.verdict, judged.reason, judged.failures, opened) == ("wrong", "pin", 1, [])
    stale = pyotp.TOTP(SECRET).at(NOW - timedelta(hours=1))  # out of the drift window
    assert _judge(code=stale).reason == "code" or stale == pyotp.TOTP(SECRET).at(NOW)


def test_the_fifth_failure_locks_and_a_running_lock_refuses_unchecked() -> None:
    judged = _judge(pin="999999", failures=4)
    assert (judged.failures, judged.stored_failures, judged.just_locked) == (5, 0, True)
    assert judged.locked_until == NOW + timedelta(minutes=10)
    opened: list[str] = []
    locked = _judge(failures=2, locked_until=NOW + timedelta(minutes=1), opened=opened)  # even the right PIN
    assert (locked.verdict, locked.failures, locked.locked_until, opened) == (
        "locked", 2, NOW + timedelta(minutes=1), [])


def test_a_lock_that_ran_out_starts_the_count_afresh() -> None:
    judged = _judge(pin="999999", failures=4, locked_until=NOW - timedelta(seconds=1))
    assert (judged.verdict, judged.failures, judged.just_locked) == ("wrong", 1, False)


def test_an_unknown_account_costs_one_pin_check_of_the_same_cost() -> None:
    """The stand-in hash for accounts that do not exist has a real PIN hash's scrypt cost, and is made once
    (a fresh one per attempt would double the work and tell unknown accounts by their slower answer)."""
    from sync import credentials

    credentials._dummy_hash.cache_clear()
    credentials.check_unknown_account("482913")
    credentials.check_unknown_account("123450")
    assert credentials._dummy_hash.cache_info().misses == 1
    assert credentials._dummy_hash().split("$")[:4] == HASH.split("$")[:4]  # scrypt, n, r, p
