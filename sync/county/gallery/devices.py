"""The device registry: which stations may deliver records, and with which signing key.

County IT registers a station when it provisions it (the station's Ed25519 public key, as the PEM
file the provisioning step writes) and revokes it when the device is lost, stolen or retired.
Revocation here stops the gallery accepting its records; revoking its TLS certificate (the
broker's ``crlfile``) stops it connecting at all. Do both: :func:`apply_broker_revocation` produces
the broker side (ACL deny rules and a CRL from the county CA) from the registry's revoked stations.

County commands to a station (``rotate`` here: :func:`sign_rotate`, :func:`publish_commands`) are
signed with the county command key in the CA directory and published with an operator identity.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from os import PathLike
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.county.gallery.store import Device, DeviceExistsError, GalleryStore, GalleryStoreError


class DeviceKeyFileError(ValueError):
    """A public-key file that is not an Ed25519 public key."""


def load_public_key(data: bytes) -> bytes:
    """Raw 32-byte Ed25519 public key from PEM (``BEGIN PUBLIC KEY``), DER or the raw 32 bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        elif len(data) == 32:
            key = Ed25519PublicKey.from_public_bytes(data)
        else:
            key = serialization.load_der_public_key(data)
    except ValueError as exc:
        raise DeviceKeyFileError(f"not a public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise DeviceKeyFileError(f"a station signs with Ed25519; this is a {type(key).__name__}")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_pem(raw: bytes) -> bytes:
    """PEM text of a raw Ed25519 public key (what provisioning writes and ``register`` reads)."""
    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(raw: bytes) -> str:
    """Short SHA-256 fingerprint to compare a key read out on the device with the registry."""
    digest = hashlib.sha256(raw).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def register(store: GalleryStore, station: str, county: str, key_file: str | PathLike[str]) -> Device:
    """Register ``station`` with the Ed25519 public key in ``key_file``."""
    raw = load_public_key(Path(key_file).read_bytes())
    return store.register_device(station, county, raw)


def list_devices(store: GalleryStore) -> list[Device]:
    return store.list_devices()


def revoke(store: GalleryStore, station: str) -> Device:
    return store.revoke_device(station)


class StoreDeviceRegistry:
    """The enrolment server's ``DeviceRegistry`` (``sync.county.enroll.registry``) backed by the gallery
    store, so a station's key lands directly in the table the receiver verifies against.

    Same rules as the enrolment side expects: the same station with the same key again is a
    no-op (a retried enrolment); a different key, another county or a revoked station is a
    ``RegistryConflict`` (replacing an identity must be a deliberate act by county IT).
    """

    def __init__(self, store: GalleryStore) -> None:
        self.store = store

    def register_device(self, county: str, station: str, public_key_pem: str) -> None:
        # Imported here so the gallery works without the enrolment package installed.
        from sync.county.enroll.registry import RegistryConflict, RegistryError

        try:
            raw = load_public_key(public_key_pem.strip().encode())
        except DeviceKeyFileError as exc:
            raise RegistryError(f"station {station!r}: {exc}") from None
        for _ in range(2):  # a concurrent registration of the same station is re-checked once
            existing = self.store.get_device(station)
            if existing is not None:
                if existing.public_key == raw and existing.county == county and existing.active:
                    return
                state = "revoked" if not existing.active else f"registered to {existing.county} with another key"
                raise RegistryConflict(
                    f"station {station!r} is {state}; revoke or re-provision it deliberately, or enrol under a "
                    "new station id"
                )
            try:
                self.store.register_device(station, county, raw)
                return
            except DeviceExistsError:
                continue
            except (GalleryStoreError, ValueError) as exc:
                raise RegistryError(f"station {station!r}: {exc}") from None
        raise RegistryError(f"station {station!r}: registration raced and did not settle")

    def get_public_key(self, county: str, station: str) -> str | None:
        """The station's registered key (PEM), or None when unknown, of another county or revoked."""
        device = self.store.get_device(station)
        if device is None or device.county != county or not device.active:
            return None
        return public_key_pem(device.public_key).decode()


# --------------------------------------------------------------------------- broker-side revocation
#
# Revoking a station in the registry stops the gallery *storing* its records. The broker still lets its
# certificate connect, publish (every record costs a verification and a rejection) and receive acks and
# commands. County IT finishes the revocation on the broker, both ways:
#
# * ACL: the broker config is regenerated with a ``user {station}`` / ``topic deny #`` block for every
#   revoked station. Mosquitto re-reads the ACL on SIGHUP and applies it to connections it already has.
# * CRL: every certificate the county CA issued to a revoked station (the enrolment server's log) is
#   listed in a CRL signed by the county CA, which Mosquitto (``crlfile``) checks at every TLS handshake.
#   It re-reads the file on SIGHUP; a ``crlfile`` line that is *new* in mosquitto.conf needs a restart,
#   which is why ``devices crl`` exists: write an empty CRL at installation and configure it from day one.

CRL_FILE = "crl.pem"


class RevocationError(ValueError):
    """The broker-side revocation could not be produced; the message says what to fix."""


@dataclass(frozen=True)
class BrokerRevocation:
    """What :func:`apply_broker_revocation` wrote, for the command to report."""

    revoked: tuple[str, ...]
    acl: Path | None = None
    conf: Path | None = None
    restart_needed: bool = False
    crl: Path | None = None
    crl_serials: tuple[str, ...] = ()
    crl_next_update: datetime | None = None


def revoked_stations(store: GalleryStore) -> list[str]:
    """Every revoked station of the registry: the registry is the one list the ACL and CRL follow."""
    return sorted(d.station for d in store.list_devices() if not d.active)


def build_crl(ca: Any, entries: list[tuple[int, datetime]], *, now: datetime | None = None) -> Any:
    """A CRL of the county CA listing ``entries`` (serial, revocation time).

    ``lastUpdate`` is backdated like the CA's certificates (a broker whose clock is a little behind
    must not see a CRL "from the future"), and ``nextUpdate`` is the CA's own expiry: OpenSSL refuses
    *every* client once the CRL it was given is past its nextUpdate, so a short one would lock the
    whole fleet out the day someone forgets to re-sign it. The CRL only ever goes to the county's own
    broker, so there is no distribution point whose freshness a short nextUpdate would protect.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from sync.county.enroll.ca import BACKDATE

    now = now or datetime.now(timezone.utc)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now - BACKDATE)
        .next_update(ca.certificate.not_valid_after_utc)
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    for serial, when in sorted(entries):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(min(when, now)).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def write_crl(store: GalleryStore | None, ca_dir: str | PathLike[str], out: str | PathLike[str], *,
              now: datetime | None = None) -> tuple[Path, tuple[str, ...], datetime]:
    """Write the county CRL to ``out`` (0644, atomically): every certificate the enrolment server issued
    to a station the registry has revoked (none when ``store`` is None, e.g. at installation).
    Returns (path, revoked serials in hex, nextUpdate)."""
    from cryptography.hazmat.primitives import serialization

    from sync.county.enroll.ca import CAError, CountyCA
    from sync.county.enroll.tokens import TokenStore
    from sync.protocol.files import write_public_file

    try:
        ca = CountyCA.load(ca_dir)
    except CAError as exc:
        raise RevocationError(str(exc)) from None
    entries: list[tuple[int, datetime]] = []
    if store is not None:
        revoked = {d.station: d for d in store.list_devices() if not d.active}
        if revoked:
            log_path = Path(ca_dir) / "enroll.db"
            if not log_path.is_file():
                raise RevocationError(f"{log_path} does not exist: without the enrolment server's log of issued "
                                      "certificates there is nothing to put in the CRL")
            for cert in TokenStore(log_path).certificates():
                device = revoked.get(cert["station"])
                if device is not None and cert["county"] == ca.county:
                    entries.append((int(cert["serial"], 16), device.revoked_at or datetime.now(timezone.utc)))
    crl = build_crl(ca, entries, now=now)
    path = Path(out)
    try:
        write_public_file(path, crl.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise RevocationError(f"cannot write the CRL {path}: {exc.strerror or exc}") from None
    return path, tuple(format(s, "x") for s, _ in sorted(entries)), crl.next_update_utc


def apply_broker_revocation(store: GalleryStore, *, broker_dir: str | PathLike[str] | None = None,
                            ca_dir: str | PathLike[str] | None = None, crl_file: str | PathLike[str] | None = None,
                            now: datetime | None = None) -> BrokerRevocation:
    """Regenerate the broker's ACL (``broker_dir``) and/or the CRL (``ca_dir``) for every station the
    registry has revoked. Idempotent: running it again writes the same deny rules and CRL entries.

    The CRL goes to ``crl_file``, else to the broker's configured ``crlfile``, else beside the broker
    files, else into the CA directory. When the broker had no ``crlfile`` yet, mosquitto.conf gains one
    and ``restart_needed`` is set (Mosquitto reads a new ``crlfile`` line only when it starts).
    """
    from sync.county.broker_config import load_settings, render_mosquitto_conf, save_settings, write_broker_files

    revoked = tuple(revoked_stations(store))
    cfg = None
    if broker_dir is not None:
        try:
            cfg = load_settings(broker_dir)
        except ValueError as exc:
            raise RevocationError(str(exc)) from None
    crl_path: Path | None = None
    serials: tuple[str, ...] = ()
    next_update = None
    if ca_dir is not None:
        target = crl_file or (cfg.crlfile if cfg is not None and cfg.crlfile else None)
        if target is None:
            target = Path(broker_dir) / CRL_FILE if broker_dir is not None else Path(ca_dir) / CRL_FILE
        crl_path, serials, next_update = write_crl(store, ca_dir, target, now=now)
    if cfg is None:
        return BrokerRevocation(revoked, crl=crl_path, crl_serials=serials, crl_next_update=next_update)
    assert broker_dir is not None
    conf_path = Path(broker_dir) / "mosquitto.conf"
    cfg.revoked_stations = revoked
    if crl_path is not None:
        cfg.crlfile = str(crl_path.resolve())
    try:
        before = conf_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = ""
    restart = bool(crl_path is not None and f"\ncrlfile {cfg.crlfile}\n" not in before)
    changed = render_mosquitto_conf(cfg) != before
    conf, acl = write_broker_files(cfg, conf_path)
    save_settings(cfg, broker_dir)
    return BrokerRevocation(revoked, acl=acl, conf=conf if changed else None, restart_needed=restart,
                            crl=crl_path, crl_serials=serials, crl_next_update=next_update)


# ------------------------------------------------------------------------------------ key rotation
#
# The county asks a station to rotate its keys with a ``rotate`` command (``sync.protocol.wire``: args
# ``{"target": "tls-certificate" | "signing-key"}``), signed with the county command key from the CA
# directory under the key id the stations know it by (``county:{county}``). What the station does with
# it is the sync agent's business; see the County IT section of the README for the whole flow.

DEFAULT_COMMAND_LIFETIME = timedelta(hours=72)
#: A gallery worker's certificate CN; publishing with it would take over that worker's MQTT session.
_WORKER_CN = re.compile(r"gallery(-[0-9]+)?\.(?P<county>[a-z0-9-]+)")


class CommandError(ValueError):
    """A command that cannot be signed or delivered; the message says why."""


@dataclass(frozen=True)
class SignedCommand:
    """A county command and its signed payload (COSE_Sign1), ready to publish or to write to a file."""

    command: Any  # sync.protocol.wire.WireCommand
    payload: bytes
    kid: str

    @property
    def topic(self) -> str:
        from sync.protocol.topics import commands_topic

        return commands_topic(self.command.county, self.command.station)


def load_command_key(ca_dir: str | PathLike[str]) -> tuple[Any, Any]:
    """The county CA of ``ca_dir`` and its Ed25519 command-signing private key, or :class:`CommandError`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.county.enroll.ca import COMMAND_KEY, CAError, CountyCA

    try:
        ca = CountyCA.load(ca_dir)
        key = serialization.load_pem_private_key((Path(ca_dir) / COMMAND_KEY).read_bytes(), password=None)
    except CAError as exc:
        raise CommandError(str(exc)) from None
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot read the county command key {Path(ca_dir) / COMMAND_KEY}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CommandError(f"{Path(ca_dir) / COMMAND_KEY} is not an Ed25519 key")
    return ca, key


def sign_commands(ca: Any, key: Any, station: str, action: str, args_list: list[dict[str, Any]], *,
                  lifetime: timedelta = DEFAULT_COMMAND_LIFETIME, now: datetime | None = None) -> list[SignedCommand]:
    """One signed ``action`` command per entry of ``args_list`` for ``station`` (county ``ca.county``)."""
    from sync.protocol.enroll import default_command_kid
    from sync.protocol.wire import MAX_COMMAND_LIFETIME, WireCommand, WireError, encode_command, uuid7

    if not timedelta(minutes=1) <= lifetime <= MAX_COMMAND_LIFETIME:
        raise CommandError(f"a command must live between 1 minute and {MAX_COMMAND_LIFETIME.days} days")
    now = now or datetime.now(timezone.utc)
    kid = default_command_kid(ca.county)
    signed = []
    for args in args_list:
        command = WireCommand(command_id=uuid7(), county=ca.county, station=station, action=action,
                              issued_at=now, expires_at=now + lifetime, args=args)
        try:
            signed.append(SignedCommand(command, encode_command(command, key, kid=kid), kid))
        except WireError as exc:
            raise CommandError(f"cannot sign the command: {exc}") from None
    return signed


def sign_rotate(ca_dir: str | PathLike[str], store: GalleryStore | None, station: str, targets: list[str], *,
                lifetime: timedelta = DEFAULT_COMMAND_LIFETIME, now: datetime | None = None) -> list[SignedCommand]:
    """One signed ``rotate`` command per target for ``station``, with the county key of ``ca_dir``.

    With a ``store``, the station must be registered, active and of the CA's county: rotating the keys
    of a revoked or unknown station would only hand an attacker who holds it a fresh identity.
    """
    from sync.protocol.wire import ROTATE_TARGETS

    ca, key = load_command_key(ca_dir)
    if not targets or any(t not in ROTATE_TARGETS for t in targets):
        raise CommandError(f"rotate targets must be among {', '.join(ROTATE_TARGETS)}")
    if store is not None:
        device = store.get_device(station)
        if device is None:
            raise CommandError(f"station {station!r} is not registered with this gallery")
        if not device.active:
            raise CommandError(f"station {station!r} is revoked; a revoked station gets no new keys")
        if device.county != ca.county:
            raise CommandError(f"station {station!r} belongs to county {device.county!r}, this CA to {ca.county!r}")
    return sign_commands(ca, key, station, "rotate", [{"target": t} for t in dict.fromkeys(targets)],
                         lifetime=lifetime, now=now)


def publish_commands(config: Any, commands: list[SignedCommand], *, timeout: float = 15.0) -> list[str]:
    """Publish ``commands`` at QoS 1 (not retained) with the identity of ``config`` (a ReceiverConfig:
    broker address, CA, certificate and key) and return one note per command ("" when nothing to say).

    A clean, non-persistent session: this is a one-off client. The broker makes the certificate CN the
    client id, so publishing with a running gallery worker's certificate would throw that worker off
    the broker; such an identity is refused. With MQTT 5 the message expires with the command (the
    broker does not keep it for a station that is away longer) and a PUBACK "no matching subscribers"
    is reported: the station has no session, so it will not get the command.
    """
    import queue

    from cryptography import x509

    from sync.county.enroll.ca import common_name
    from sync.protocol import mqtt
    from sync.protocol.wire import COMMAND_CONTENT_TYPE

    try:
        cn = common_name(x509.load_pem_x509_certificate(Path(config.cert_file).read_bytes()).subject)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot use the certificate in the config: {exc}") from None
    if cn is None or _WORKER_CN.fullmatch(cn):
        raise CommandError(
            f"the certificate is {cn!r}, a gallery worker's identity: publishing with it would take over that "
            f"worker's session on the broker. Issue an operator certificate (booking-gallery ca client-cert "
            f"--name ops.{config.county}), list it with broker-config --extra-identity ops.{config.county}, and "
            "use a config file that names it")
    settings = mqtt.Settings(host=config.host, port=config.port, client_id=cn, ca_file=config.ca_file,
                             cert_file=config.cert_file, key_file=config.key_file, protocol=config.protocol,
                             keepalive=30, clean_start=True, session_expiry=0)
    events: queue.Queue[mqtt.Event] = queue.Queue()
    try:
        client = mqtt.Client(settings, events)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot use the certificate in the config: {exc}") from None
    try:
        client.connect()
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot connect to the broker {config.host}:{config.port}: {exc}") from None
    client.loop_start()
    try:
        answer = _next_event(events, (mqtt.Connected, mqtt.Refused), timeout)
        if not isinstance(answer, mqtt.Connected):
            reason = answer.reason if isinstance(answer, mqtt.Refused) else "no answer (certificate refused?)"
            raise CommandError(f"the broker {config.host}:{config.port} did not accept {cn!r}: {reason}")
        notes = []
        for signed in commands:
            remaining = (signed.command.expires_at - datetime.now(timezone.utc)).total_seconds()
            info = client.publish(signed.topic, signed.payload, qos=1, retain=False,
                                  content_type=COMMAND_CONTENT_TYPE, expiry=max(1, int(remaining)))
            notes.append(_confirmed(events, info.mid, signed, cn, client.v5, timeout))
        return notes
    finally:
        client.disconnect()
        client.loop_stop()


def _next_event(events: Any, kinds: tuple[type, ...], timeout: float, mid: int | None = None) -> Any:
    """The next event of ``kinds`` (and ``mid``) from the client's queue, or None after ``timeout``."""
    import queue
    import time

    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = events.get(timeout=left)
        except queue.Empty:
            return None
        if isinstance(event, kinds) and (mid is None or getattr(event, "mid", None) == mid):
            return event
    return None


def _confirmed(events: Any, mid: int, signed: SignedCommand, cn: str, v5: bool, timeout: float) -> str:
    """Wait for the PUBACK of one command; its note ("" when nothing to say), or CommandError."""
    from sync.protocol import mqtt

    published = _next_event(events, (mqtt.Published,), timeout, mid=mid)
    if published is None:
        raise CommandError(f"the broker did not confirm command {signed.command.command_id}")
    if published.reason.is_failure:
        raise CommandError(f"the broker refused command {signed.command.command_id}: {published.reason} (may "
                           f"{cn!r} write commands? It must be listed with broker-config --extra-identity)")
    if v5 and published.reason.code == mqtt.NO_MATCHING_SUBSCRIBERS:
        return (f"no session is subscribed to {signed.topic}: station {signed.command.station} has never "
                "connected or its broker session expired, so it will NOT get this command; send it again once "
                "the station is online (booking-gallery fleet)")
    return ""


def county_mismatch(devices: list[Device], county: str) -> str | None:
    """A warning when no active registered station is in the worker's ``county``, else None.

    A worker subscribes to its own county's topics only, so a county name that differs from the one the
    stations were provisioned with (``king`` against ``king-county``) means it receives nothing and says
    nothing, while the stations see "no gallery is subscribed". Said once at start, naming both sides.
    """
    active = [d for d in devices if d.active]
    if not active or any(d.county == county for d in active):
        return None
    counties = ", ".join(sorted({d.county for d in active}))
    return (f"no registered station is in county {county!r}, the county this worker subscribes to "
            f"(booking/v1/{county}/+/records); the registered stations are in: {counties}. "
            "Check [gallery] county against the county of `ca init` and of each station")
