"""A throwaway county PKI and a real Mosquitto broker for tests.

The broker runs from the files :mod:`sync.county.broker_config` generates (so the shipped generator is
what is tested), on a free loopback port, with mutual TLS and the generated ACL. It is never the
system broker on 1883. Reusable by the device-side sync tests: ``make_pki``, ``MosquittoBroker``
and ``MqttTestClient``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import os
import queue
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync.county.broker_config import BrokerConfig, write_broker_files
from sync.protocol.tls import tls_context

INSTALL_HINT = "apt-get update && apt-get install -y mosquitto"


def mosquitto_binary() -> str | None:
    """The broker executable: $MOSQUITTO, /usr/sbin/mosquitto, or mosquitto on PATH."""
    for candidate in (os.environ.get("MOSQUITTO"), "/usr/sbin/mosquitto", shutil.which("mosquitto")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------- PKI
@dataclass
class PKI:
    """A CA with a broker certificate and client certificates issued on demand."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    _ca_key: ec.EllipticCurvePrivateKey
    _ca: x509.Certificate
    _issued: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def client(self, cn: str) -> tuple[Path, Path]:
        """(cert, key) paths of a client certificate with this CN, issued once and reused."""
        if cn not in self._issued:
            self._issued[cn] = _issue(self, cn, server=False)
        return self._issued[cn]


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test County"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _issue(pki: PKI, cn: str, *, server: bool) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(pki._ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pki._ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(pki._ca_key, hashes.SHA256())
    stem = pki.directory / cn.replace("/", "_")
    cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def make_pki(directory: Path) -> PKI:
    """A fresh CA (EC P-256, two days) and a broker certificate for localhost and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Test County Booking CA"))
        .issuer_name(_name("Test County Booking CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki = PKI(directory, ca_path, Path(), Path(), ca_key, ca)
    pki.server_cert, pki.server_key = _issue(pki, "localhost", server=True)
    return pki


# ---------------------------------------------------------------------------------------- broker
class BrokerError(RuntimeError):
    pass


class _PortTaken(Exception):
    pass


class MosquittoBroker:
    """One Mosquitto process on a free loopback port, configured by ``sync.county.broker_config``."""

    def __init__(self, directory: Path, pki: PKI, county: str, **config: Any) -> None:
        self.binary = mosquitto_binary()
        if self.binary is None:
            raise BrokerError(f"mosquitto is not installed; install it with: {INSTALL_HINT}")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        self.pki = pki
        self.county = county
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log_path = self.directory / "mosquitto.log"
        self.config = BrokerConfig(
            county=county,
            cafile=str(pki.ca_cert),
            certfile=str(pki.server_cert),
            keyfile=str(pki.server_key),
            acl_file=str(self.directory / "acl"),
            port=self.port,
            bind_address="127.0.0.1",
            persistence_location=str(self.directory / "data") + "/",
            run_as_user=getpass.getuser(),
            log_dest=f"file {self.log_path}",
            **config,
        )
        self.conf_path, self.acl_path = write_broker_files(self.config, self.directory / "mosquitto.conf")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it completes a TLS handshake. On the first start only, a port that
        another process grabbed since ``free_port`` is replaced by a new one (restarts keep theirs)."""
        for _ in range(3):
            try:
                self._start_once(timeout)
                self._started = True
                return
            except _PortTaken:
                if getattr(self, "_started", False):
                    raise BrokerError(f"port {self.port} was taken while the broker was down") from None
                self.port = self.config.port = free_port()
                write_broker_files(self.config, self.conf_path)
        raise BrokerError(f"no free port for mosquitto:\n{self.logs()}")

    def _start_once(self, timeout: float) -> None:
        assert self.binary is not None
        before = {name: self._size(name) for name in ("mosquitto.log", "stdout.log")}
        out = (self.directory / "stdout.log").open("ab")
        self.process = subprocess.Popen([self.binary, "-c", str(self.conf_path)], stdout=out, stderr=out)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                fresh = "".join(self._tail(name, offset) for name, offset in before.items())
                if "Address already in use" in fresh:
                    raise _PortTaken
                raise BrokerError(f"mosquitto exited:\n{fresh or self.logs()}")
            if self._tls_ready():
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not accept TLS on {self.port} within {timeout}s:\n{self.logs()}")

    def _size(self, name: str) -> int:
        path = self.directory / name
        return path.stat().st_size if path.exists() else 0

    def _tail(self, name: str, offset: int) -> str:
        path = self.directory / name
        if not path.exists():
            return ""
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def _tls_ready(self) -> bool:
        cert, key = self.pki.client("probe")
        ctx = tls_context(str(self.pki.ca_cert), str(cert), str(key))
        try:
            with (
                socket.create_connection((self.host, self.port), timeout=1) as raw,
                ctx.wrap_socket(raw, server_hostname=self.host),
            ):
                return True
        except (OSError, ssl.SSLError):
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, for crash tests (no final persistence save)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process = None

    def restart(self, *, hard: bool = False) -> None:
        """Stop (or kill) and start again on the same port with the same persistence."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def logs(self) -> str:
        parts = []
        for name in ("mosquitto.log", "stdout.log"):
            path = self.directory / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)


# ---------------------------------------------------------------------------------------- client
class MqttTestClient:
    """A paho client with a certificate, recording messages, PUBACK and SUBACK reason codes."""

    def __init__(self, broker: MosquittoBroker, cn: str, *, protocol: str = "5") -> None:
        self.broker = broker
        self.cn = cn
        self.v5 = protocol == "5"
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.pubacks: dict[int, Any] = {}
        self.subacks: dict[int, list[Any]] = {}
        self._cond = threading.Condition()
        self.connected = threading.Event()
        self.connect_rc: Any = None
        cert, key = broker.pki.client(cn)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cn,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
        )
        self.client.tls_set_context(tls_context(str(broker.pki.ca_cert), str(cert), str(key)))
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connect_rc = rc
        self.connected.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._cond:
            self.pubacks[mid] = rc
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: list[Any], props: Any) -> None:
        with self._cond:
            self.subacks[mid] = list(rcs)
            self._cond.notify_all()

    def connect(self, timeout: float = 10.0) -> MqttTestClient:
        self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise BrokerError(f"{self.cn} did not get a CONNACK")
        if getattr(self.connect_rc, "is_failure", False):
            raise BrokerError(f"{self.cn} was refused: {self.connect_rc}")
        return self

    def _wait(self, table: dict[int, Any], mid: int, timeout: float) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: mid in table, timeout):
                raise TimeoutError(f"no acknowledgement for mid {mid}")
            return table[mid]

    def subscribe(self, topic: str, timeout: float = 5.0) -> list[Any]:
        """Subscribe at QoS 1; return the SUBACK reason codes."""
        rc, mid = self.client.subscribe(topic, qos=1)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self._wait(self.subacks, mid, timeout)

    def publish(self, topic: str, payload: bytes, *, timeout: float = 10.0, correlation: bytes | None = None) -> Any:
        """Publish at QoS 1 and return the PUBACK reason code."""
        props = None
        if self.v5 and correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=1, properties=props)
        return self._wait(self.pubacks, info.mid, timeout)

    def next_message(self, timeout: float = 10.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def no_message(self, wait: float) -> bool:
        try:
            self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------------------- gallery
def start_gallery(
    broker: MosquittoBroker,
    db_path: Path,
    devices: dict[str, Any],
    *,
    protocol: str = "5",
    wait: bool = True,
) -> Any:
    """A real GalleryReceiver (gallery.{county} certificate) on ``broker``, storing into the SQLite
    file ``db_path``, with ``devices`` (station -> Ed25519 private key) registered if not already."""
    from cryptography.hazmat.primitives import serialization as _ser

    from sync.county.broker_config import gallery_identity
    from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
    from sync.county.gallery.store import SQLiteStore

    store = SQLiteStore(db_path)
    for station, key in devices.items():
        if store.get_device(station) is None:
            raw = key.public_key().public_bytes(_ser.Encoding.Raw, _ser.PublicFormat.Raw)
            store.register_device(station, broker.county, raw)
    cert, key_path = broker.pki.client(gallery_identity(broker.county))
    config = ReceiverConfig(
        county=broker.county,
        ca_file=str(broker.pki.ca_cert),
        cert_file=str(cert),
        key_file=str(key_path),
        host=broker.host,
        port=broker.port,
        protocol=protocol,
    )
    receiver = GalleryReceiver(config, store)
    receiver.start()
    if wait and not receiver.wait_ready(15):
        raise BrokerError(f"gallery did not subscribe:\n{broker.logs()}")
    return receiver


def stop_gallery(receiver: Any) -> None:
    """Stop a receiver from :func:`start_gallery` and close its store."""
    receiver.stop()
    receiver.store.close()
