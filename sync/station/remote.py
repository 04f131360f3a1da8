"""County commands on the station: verify, run once, audit; and the settings the county may change.

A command arrives on ``booking/v1/{county}/{station}/commands`` (the broker ACL lets only the gallery
identity write there), but the broker is not trusted with what a command *says*: every payload must be
a COSE_Sign1 signed by a county command key this station knows (looked up by ``kid``), addressed to
this county and station, and inside its validity window (:func:`sync.protocol.wire.decode_command`). Then:

* ``purge``: the store's ``purge_booking`` (it writes its own ``purge`` audit entry and overwrites the
  rows); undelivered records may be purged too: a sealed or expunged booking must not be sent.
* ``config``: only the keys in :data:`ALLOWED_SETTINGS`, each range-checked; one bad key refuses the
  whole command, so a half-applied change never exists. Accepted values go to
  ``DATA_DIR/sync/remote-settings.json`` (the station's ``/etc`` is read-only to its services under the
  shipped systemd units), which the services read over their file config (:func:`load_remote_settings`).
* ``rotate`` of ``tls-certificate``: the station gets a new TLS key and certificate from the enrolment
  server (``rotator``, the agent's call of :func:`firmware.provision.rotate_certificate`: new key as
  ``tls.key.pending``, ``POST /rotate`` with the signed command and a proof by the current signing key,
  then certificate, key, drop pending, in that order). Audited ``command_applied`` with the old and new
  certificate serials; the agent then drops its MQTT connection so the next one uses the new files.
  When the enrolment server cannot be reached or refuses, the old identity stays in use, the alarm
  ``key_rotation_failed`` is raised, the failure is audited (``command_refused``, code
  ``rotation_failed``) and the command is *not* put in the ledger: its payload waits in
  ``DATA_DIR/sync/rotate-retry.cose`` and is run again every ``[sync] rotate_retry`` seconds (and at
  agent start) until it succeeds, is refused for good, or expires (then ``decode_command`` refuses it and
  the file is dropped; the alarm stays for a person to see). A retry re-sends the same pending key, and
  the server re-sends the same certificate for a command id it already paid for, so a lost answer
  costs nothing.
* ``rotate`` of ``signing-key``: refused (``not_supported``): the gallery verifies every record against
  the key the station enrolled with, so county IT replaces it by re-provisioning.

Every command applied or refused is audited (``command_applied`` / ``command_refused``), including
payloads that fail verification (with their SHA-256 only: an unverified payload is not evidence of
anything but its arrival). Executed command ids are remembered in ``DATA_DIR/sync/commands.json`` until
they expire, so a command the broker delivers twice (QoS 1) runs once; after expiry ``decode_command``
refuses it anyway. The ledger is written after the action, so a crash in between re-runs the action on
redelivery: both actions are idempotent (purging a purged booking finds nothing, setting a value twice
changes nothing), which is why that order is safe and the reverse (remember, then crash before acting)
is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.protocol.files import make_private_dir, write_private_file
from sync.protocol.wire import WireCommand, WireError, decode_command

log = logging.getLogger("booking_station.sync.commands")

STATE_DIR = "sync"
LEDGER_FILE = "commands.json"
SETTINGS_FILE = "remote-settings.json"
ROTATE_RETRY_FILE = "rotate-retry.cose"
ALARM_KEY_ROTATION_FAILED = "key_rotation_failed"


@dataclass(frozen=True)
class Setting:
    """One setting the county may change remotely: its type, range and who reads it."""

    kind: type
    lo: float
    hi: float
    used_by: str


#: The remote allow-list. Kept small on purpose: anything that changes where records go or who the
#: station trusts (broker, certificates, keys) is changed only on the device, by county IT.
ALLOWED_SETTINGS: dict[str, Setting] = {
    "delivered_image_days": Setting(float, 0, 3650, "scheduler: days a delivered record keeps its images"),
    "audit_keep_days": Setting(int, 365, 3650, "scheduler: days of audit log kept (CJIS: at least 365)"),
    "status_interval": Setting(float, 10, 3600, "sync agent: seconds between status heartbeats"),
}


class CommandRefused(Exception):
    """A verified command that this station will not run; ``code`` is audited."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class RotationFailed(Exception):
    """A certificate rotation that did not happen this time (network, enrolment server); retried later."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


#: ``rotator(command, payload)`` rotates the TLS identity and returns the audit result (old and new serial).
Rotator = Callable[[WireCommand, bytes], dict[str, Any]]


@dataclass(frozen=True)
class CommandOutcome:
    """What happened to one command payload (for logs, tests and the agent's counters)."""

    status: str  # applied | refused | failed
    code: str | None
    detail: str
    command_id: str | None = None
    action: str | None = None
    result: dict[str, Any] | None = None


def _now_utc() -> datetime:
    return datetime.now(timezone.utc)


def state_dir(data_dir: Path | str) -> Path:
    """``DATA_DIR/sync``: the agent's own small state files (0700, files 0600)."""
    return Path(data_dir) / STATE_DIR


def load_command_keys(files: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    """County command public keys by key id, from PEM files. A missing file is skipped with a warning
    (the station still delivers records without any; it then refuses every command as ``unknown_kid``);
    a file that is not an Ed25519 public key is an error: a mistyped path must not pass silently."""
    keys: dict[str, Ed25519PublicKey] = {}
    for kid, path in files.items():
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            log.warning("county command key %s (%s) does not exist; commands signed with it are refused", kid, path)
            continue
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"county command key {path} is not an Ed25519 public key")
        keys[kid] = key
    return keys


def load_remote_settings(data_dir: Path | str) -> dict[str, Any]:
    """The settings the county changed remotely (empty when none). Services apply these over their
    file configuration; unknown keys (from a newer agent) are ignored rather than trusted."""
    path = state_dir(data_dir) / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("remote settings file %s is unreadable (%s); using the file configuration", path, exc)
        return {}
    settings = data.get("settings", {}) if isinstance(data, dict) else {}
    return {k: v for k, v in settings.items() if k in ALLOWED_SETTINGS} if isinstance(settings, dict) else {}


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a ``config`` command's settings against :data:`ALLOWED_SETTINGS`; raise
    :class:`CommandRefused` naming the first bad key."""
    if not settings:
        raise CommandRefused("bad_setting", "no settings given")
    out: dict[str, Any] = {}
    for key, value in settings.items():
        spec = ALLOWED_SETTINGS.get(key)
        if spec is None:
            raise CommandRefused(
                "setting_not_allowed",
                f"{key[:64]!r} cannot be changed remotely (allowed: {', '.join(sorted(ALLOWED_SETTINGS))})",
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CommandRefused("bad_setting", f"{key} must be a number")
        if spec.kind is int and not isinstance(value, int):
            raise CommandRefused("bad_setting", f"{key} must be a whole number")
        if not math.isfinite(value) or not spec.lo <= value <= spec.hi:
            raise CommandRefused("bad_setting", f"{key} must be within {spec.lo:g}..{spec.hi:g}, not {value!r}")
        out[key] = spec.kind(value)
    return out


class CommandLedger:
    """Command ids this station has handled, kept until they expire (a JSON file, written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, str]] = {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("commands"), dict):
                self.entries = {k: v for k, v in data["commands"].items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            # A damaged ledger must not stop the agent: expired commands are refused by their expiry
            # anyway, and the actions are idempotent. Keep the damaged file for a person to look at.
            log.error("command ledger %s is unreadable (%s); starting a new one", path, exc)
            path.replace(path.with_name(path.name + ".damaged"))

    def seen(self, command_id: str) -> dict[str, str] | None:
        return self.entries.get(command_id)

    def add(self, command: WireCommand, outcome: str, now: datetime) -> None:
        self.entries[command.command_id] = {
            "expires_at": command.expires_at.isoformat(),
            "outcome": outcome,
            "action": command.action,
            "handled_at": now.isoformat(),
        }
        self.entries = {k: v for k, v in self.entries.items() if _expiry(v) > now}
        make_private_dir(self.path.parent)
        body = json.dumps({"v": 1, "commands": self.entries}, sort_keys=True, indent=1).encode()
        write_private_file(self.path, body)


def _expiry(entry: Mapping[str, str]) -> datetime:
    try:
        return datetime.fromisoformat(entry["expires_at"])
    except (KeyError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)


class CommandHandler:
    """Verifies and runs county commands against the station store (see the module docstring).

    ``store`` is an ``appliance.store.Store`` used only from the calling thread. ``on_purged`` and
    ``on_settings`` let the agent forget purged records it has in flight and apply settings it uses.
    """

    def __init__(
        self,
        store: Any,
        *,
        county: str,
        station: str,
        data_dir: Path | str,
        keys: Mapping[str, Ed25519PublicKey],
        clock: Callable[[], datetime] = _now_utc,
        on_purged: Callable[[list[str]], None] | None = None,
        on_settings: Callable[[dict[str, Any]], None] | None = None,
        rotator: Rotator | None = None,
    ) -> None:
        self.store = store
        self.county = county
        self.station = station
        self.data_dir = Path(data_dir)
        self.keys = dict(keys)
        self.clock = clock
        self.on_purged = on_purged
        self.on_settings = on_settings
        self.rotator = rotator
        self.ledger = CommandLedger(state_dir(data_dir) / LEDGER_FILE)
        self._kid: str | None = None

    def _lookup(self, kid: str) -> Ed25519PublicKey | None:
        self._kid = kid
        return self.keys.get(kid)

    def handle(self, payload: bytes) -> CommandOutcome:
        """Verify, run once and audit one command payload. Never raises for a bad payload."""
        now = self.clock()
        self._kid = None
        digest = hashlib.sha256(payload).hexdigest()
        try:
            command = decode_command(payload, self._lookup, now=now, county=self.county, station=self.station)
        except WireError as exc:
            details = {"code": exc.code, "detail": exc.message[:300], "payload_sha256": digest,
                       "payload_bytes": len(payload), "kid": (self._kid or "")[:128] or None}
            self._audit("system", "command_refused", details)
            log.warning("refused a county command (%s): %s", exc.code, exc.message)
            return CommandOutcome("refused", exc.code, exc.message)
        base = {"command_id": command.command_id, "action": command.action, "kid": self._kid,
                "issued_at": command.issued_at.isoformat(), "expires_at": command.expires_at.isoformat()}
        previous = self.ledger.seen(command.command_id)
        if previous is not None:
            detail = f"command already handled ({previous.get('outcome')}) at {previous.get('handled_at')}"
            self._audit("system", "command_refused", {**base, "code": "duplicate", "detail": detail})
            return CommandOutcome("refused", "duplicate", detail, command.command_id, command.action)
        try:
            result = self._apply(command, payload)
        except RotationFailed as exc:
            detail = f"{exc.detail} (the current certificate stays in use; retried until the command expires at " \
                     f"{command.expires_at.isoformat()})"
            self._audit("system", "command_refused", {**base, "code": exc.code, "detail": detail[:500]})
            self._alarm(f"certificate rotation ordered by county command {command.command_id} failed: {exc.detail}")
            self._keep_for_retry(payload)
            log.warning("certificate rotation %s failed (%s): %s", command.command_id, exc.code, exc.detail)
            return CommandOutcome("failed", exc.code, exc.detail, command.command_id, command.action)
        except CommandRefused as exc:
            self._audit("system", "command_refused", {**base, "code": exc.code, "detail": exc.detail})
            self.ledger.add(command, "refused", now)
            log.warning("refused county command %s (%s): %s", command.command_id, exc.code, exc.detail)
            return CommandOutcome("refused", exc.code, exc.detail, command.command_id, command.action)
        except Exception as exc:  # the store failed (disk full, database locked too long): not run
            detail = f"{type(exc).__name__}: {exc}"[:300]
            log.exception("county command %s could not be run", command.command_id)
            self._audit("system", "command_refused", {**base, "code": "failed", "detail": detail})
            return CommandOutcome("failed", "failed", detail, command.command_id, command.action)
        self._audit("county", "command_applied", {**base, "args": _args_summary(command), "result": result})
        self.ledger.add(command, "applied", now)
        log.info("applied county command %s (%s)", command.command_id, command.action)
        return CommandOutcome("applied", None, "applied", command.command_id, command.action, result)

    def retry_pending(self) -> CommandOutcome | None:
        """Run a rotation that failed earlier again (see the module docstring); None when none waits."""
        path = state_dir(self.data_dir) / ROTATE_RETRY_FILE
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return None
        outcome = self.handle(payload)
        if outcome.status != "failed":  # applied, refused for good, expired or already handled
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return outcome

    def _keep_for_retry(self, payload: bytes) -> None:
        try:
            make_private_dir(state_dir(self.data_dir))
            write_private_file(state_dir(self.data_dir) / ROTATE_RETRY_FILE, payload)
        except OSError:
            log.exception("cannot keep the rotate command for a retry; it runs again if the county re-sends it")

    def _alarm(self, message: str) -> None:
        try:
            self.store.raise_alarm(ALARM_KEY_ROTATION_FAILED, message[:500])
        except Exception:
            log.exception("could not raise the %s alarm", ALARM_KEY_ROTATION_FAILED)

    def _rotate(self, command: WireCommand, payload: bytes) -> dict[str, Any]:
        if command.args["target"] != "tls-certificate":
            raise CommandRefused(
                "not_supported",
                f"rotate {command.args['target']} is not run remotely: the gallery verifies every record against "
                "the signing key the station enrolled with, so county IT replaces it by re-provisioning the station",
            )
        if self.rotator is None:
            raise CommandRefused(
                "not_supported",
                "this station has no enrolment server URL ([station] enroll_url, recorded by provision) to get a "
                "new certificate from; re-provision it, or set [sync] enroll_url",
            )
        result = self.rotator(command, payload)
        try:
            self.store.clear_alarm(ALARM_KEY_ROTATION_FAILED)
        except Exception:
            log.exception("could not clear the %s alarm", ALARM_KEY_ROTATION_FAILED)
        with contextlib.suppress(FileNotFoundError):
            (state_dir(self.data_dir) / ROTATE_RETRY_FILE).unlink()
        return result

    def _apply(self, command: WireCommand, payload: bytes = b"") -> dict[str, Any]:
        if command.action == "purge":
            result = self.store.purge_booking(command.args["record_id"], actor="county", reason=command.args["reason"])
            if self.on_purged is not None and result.record_ids:
                self.on_purged(list(result.record_ids))
            return {"record_ids": list(result.record_ids), "states": dict(result.states)}
        if command.action == "config":
            settings = check_settings(command.args["settings"])
            current = load_remote_settings(self.data_dir)
            changes = {k: {"old": current.get(k), "new": v} for k, v in settings.items()}
            merged = {**current, **settings}
            make_private_dir(state_dir(self.data_dir))
            body = {"v": 1, "settings": merged, "command_id": command.command_id,
                    "updated_at": self.clock().isoformat()}
            write_private_file(state_dir(self.data_dir) / SETTINGS_FILE, json.dumps(body, sort_keys=True).encode())
            if self.on_settings is not None:
                self.on_settings(settings)
            return {"changes": changes}
        if command.action == "rotate":
            return self._rotate(command, payload)
        raise CommandRefused("not_supported", f"{command.action} is not run by this station")

    def _audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        try:
            self.store.append_audit(actor, action, details)
        except Exception:  # an audit failure must be loud, but must not stop deliveries
            log.exception("could not audit %s %s", action, details.get("command_id") or details.get("payload_sha256"))


def _args_summary(command: WireCommand) -> dict[str, Any]:
    return dict(command.args)


def settings_file(data_dir: Path | str) -> Path:
    """Where accepted remote settings are kept (for services and people to read)."""
    return state_dir(data_dir) / SETTINGS_FILE


def private_files_ok(path: Path) -> bool:
    """True when ``path`` is readable by its owner only (what a private key file must be)."""
    try:
        return (os.stat(path).st_mode & 0o077) == 0
    except OSError:
        return False
