"""The fuzz targets: one function per input surface that takes untrusted bytes.

Each target feeds the bytes to the real code and lets through only the error types that code documents
for bad input; anything else escapes and is a crash (atheris reports it, the corpus replay test fails).
The first byte of an input chooses a mode, so one target also reaches the code *behind* a signature
check: in the signed modes the rest of the input is signed here with a fixed key the verifier trusts,
so the fuzzer explores the content parser instead of stopping at ``bad_signature`` every time.

Used by ``python -m tests.fuzz`` (``make fuzz``, atheris, coverage-guided) and by
``tests/fuzz/test_corpus.py`` (``make test``: replays the small seed corpus kept in ``corpus/``).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.protocol import wire

KEY = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
PUBLIC = KEY.public_key()
STATION, COUNTY, COMMAND_KID = "st-01", "king", "county-cmd-1"
#: Commands are checked against this moment (the seed commands are valid then).
NOW = datetime(2026, 3, 1, 15, 0, tzinfo=timezone.utc)


def _station_lookup(kid: str) -> Any:
    if kid != STATION:
        raise wire.WireError("kid_mismatch", f"signed by {kid!r}")
    return PUBLIC


# ----------------------------------------------------------------------------------------- wire
def fuzz_wire(data: bytes) -> None:
    """Records (raw envelope, or fuzzed content signed here), acks and audit batches."""
    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    try:
        if mode == 0:
            wire.verify_record(body, _station_lookup)
        elif mode == 1:
            payload = wire.sign1(body, content_type=wire.RECORD_CONTENT_TYPE, kid=STATION, key=KEY)
            wire.verify_record(payload, _station_lookup)
        elif mode == 2:
            wire.decode_ack(body)
        else:
            _audit_batch(body)
    except wire.WireError:
        pass


def _audit_batch(body: bytes) -> None:
    from sync.protocol import audit_wire

    payload = body
    if body[:1] == b"\x01":
        payload = wire.sign1(body[1:], content_type=audit_wire.AUDIT_CONTENT_TYPE, kid=STATION, key=KEY)
    audit_wire.verify_batch(payload, _station_lookup)


# -------------------------------------------------------------------------------------- commands
class _Store:
    """What the command handler needs of the station store, without a database: it records calls."""

    def __init__(self) -> None:
        self.audit: list[tuple[str, str, dict[str, Any]]] = []

    def append_audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        self.audit.append((actor, action, details))

    def raise_alarm(self, name: str, message: str) -> None:
        pass

    def clear_alarm(self, name: str) -> None:
        pass

    def purge_booking(self, record_id: str, *, actor: str, reason: str) -> Any:
        return SimpleNamespace(record_ids=(record_id,), states={record_id: "purged"})


_command_dir: Path | None = None


def fuzz_command(data: bytes) -> None:
    """The station's command verifier: a raw payload, or fuzzed command content signed by a county key it
    trusts. ``handle`` never raises for a bad payload: it answers with a refused outcome."""
    global _command_dir
    from sync.station.remote import CommandHandler

    if not data:
        return
    if _command_dir is None:
        _command_dir = Path(tempfile.mkdtemp(prefix="fuzz-command-"))
    payload = data[1:]
    if data[0] % 2:
        payload = wire.sign1(payload, content_type=wire.COMMAND_CONTENT_TYPE, kid=COMMAND_KID, key=KEY)
    store = _Store()
    handler = CommandHandler(store, county=COUNTY, station=STATION, data_dir=_command_dir,
                             keys={COMMAND_KID: PUBLIC}, clock=lambda: NOW)
    outcome = handler.handle(payload)
    if outcome.status not in ("applied", "refused", "failed"):
        raise AssertionError(f"unknown outcome {outcome.status!r}")
    if outcome.status == "failed":  # only a rotation or a store failure may fail; this store never fails
        raise AssertionError(f"command failed: {outcome.detail}")
    if not store.audit:
        raise AssertionError("a handled command left no audit entry")
    ledger = _command_dir / "sync" / "commands.json"
    if ledger.exists() and outcome.status == "applied":
        ledger.unlink()  # each input starts from an empty ledger, so a replayed seed applies again


# ------------------------------------------------------------------------------------------ NIST
def fuzz_nist(data: bytes) -> None:
    """The ANSI/NIST reader and validator the gallery runs on every export it writes (what
    ``validate_transaction`` does, in its two steps, so the file is parsed once)."""
    from sync.county.gallery.nist.codec import decode_transaction
    from sync.county.gallery.nist.model import NistFormatError
    from sync.county.gallery.nist.validate import validate_records

    try:
        records = decode_transaction(data)
    except NistFormatError:
        return
    issues = validate_records(records)
    if not isinstance(issues, list):
        raise AssertionError("validate_records must return a list")


# ---------------------------------------------------------------------------------------- config
_config_dir: Path | None = None


def _config_file(body: bytes) -> Path:
    global _config_dir
    if _config_dir is None:
        _config_dir = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
    path = _config_dir / "config.toml"
    path.write_bytes(body)
    return path


def fuzz_config(data: bytes) -> None:
    """The three TOML loaders: station.toml (appliance and sync sections) and county.toml."""
    from appliance.config import StationConfigError, load_config
    from sync.county.config import CountyConfigError, load_county_config
    from sync.station.config import SyncConfigError, load_sync_config

    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    path = _config_file(body)
    loaders: list[tuple[Callable[[], object], tuple[type[Exception], ...]]] = [
        (lambda: load_config(path), (StationConfigError,)),
        (lambda: load_sync_config(path, path.parent / "data"), (SyncConfigError,)),
        (lambda: load_county_config(path), (CountyConfigError,)),
    ]
    load, allowed = loaders[mode]
    with contextlib.suppress(allowed):
        load()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "wire": fuzz_wire,
    "command": fuzz_command,
    "nist": fuzz_nist,
    "config": fuzz_config,
}

CORPUS = Path(__file__).resolve().parent / "corpus"


def corpus_files(target: str) -> list[Path]:
    """The seed inputs of ``target``, sorted."""
    return sorted(p for p in (CORPUS / target).iterdir() if p.is_file()) if (CORPUS / target).is_dir() else []


def quiet_logging() -> None:
    """The handlers log every refusal; a fuzz run makes millions."""
    import logging

    logging.disable(logging.CRITICAL)
