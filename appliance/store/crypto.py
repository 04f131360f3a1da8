"""Encryption at rest for images and templates: AES-256-GCM with a key kept outside the database.

Why these choices:

* AES-256-GCM (the CJIS Security Policy asks for FIPS-approved encryption of CJI at rest) is an AEAD:
  a wrong key and a changed byte are both detected, so a read returns the original bytes or raises
  `DecryptError`, never garbage that could be delivered to the county as someone's mug shot.
* Each blob gets its own random 96-bit nonce. With one key per device and a few thousand bookings a
  year, the number of encryptions stays many orders of magnitude below the 2**32 NIST limit for
  random nonces.
* The record id and a field label (e.g. ``capture:frontal:0``) are bound as associated data, so a blob
  copied onto another record or another pose fails to decrypt instead of showing the wrong person.
* The key lives in its own file (``DATA_DIR/keys/store.key``, mode 0600, directory 0700): a copied
  database file alone reveals no image, and decommissioning only has to destroy 32 bytes
  (`crypto_erase`).

Blob layout: ``version (1 byte) | nonce (12) | ciphertext | tag (16)``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.store.errors import DecryptError, StoreKeyFileError
from sync.protocol.files import fsync_dir

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
BLOB_VERSION = 1
_AAD_PREFIX = b"booking-station/store/v1"


def key_fingerprint(key: bytes) -> str:
    """A short, non-secret name for a key, stored in the database to catch a swapped key file early.

    It is a domain-separated SHA-256 of the key, so it reveals nothing usable about the key itself.
    """
    return hashlib.sha256(b"booking-station key fingerprint v1\x00" + key).hexdigest()[:16]


def create_key_file(path: Path | str) -> bytes:
    """Create a new random key at ``path`` (mode 0600, parent made 0700 if missing) and return it.

    The key is written to a private temporary file, flushed, then hard-linked into place, so a crash
    never leaves a half-written key under the real name. If another process created the key first, its
    key is used (``os.link`` refuses to replace) and this one's is discarded.
    """
    path = Path(path)
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True)
        os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask
    tmp = parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    fsync_dir(parent)
    return load_key(path)


def load_key(path: Path | str) -> bytes:
    """Read the key at ``path``, refusing one that group or others could read or write.

    A key that others can read protects nothing, so this is an error rather than a warning: the fix
    (``chmod 600``) is one command, and the message names it.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StoreKeyFileError(f"key file {path} does not exist") from None
    except PermissionError:
        raise StoreKeyFileError(f"key file {path} cannot be reached: permission denied") from None
    if not stat.S_ISREG(st.st_mode):
        raise StoreKeyFileError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise StoreKeyFileError(
            f"key file {path} has mode {mode:04o}: group or others can access it, so it is refused "
            f"(a key others can read protects nothing). Fix with 'chmod 600 {path}' and find out who "
            f"changed it")
    try:
        key = path.read_bytes()
    except PermissionError:
        raise StoreKeyFileError(
            f"key file {path} cannot be read: permission denied (run as the user that owns it)") from None
    except OSError as exc:
        raise StoreKeyFileError(f"key file {path} cannot be read: {exc.strerror or exc}") from None
    if len(key) != KEY_BYTES:
        raise StoreKeyFileError(
            f"key file {path} holds {len(key)} bytes, not {KEY_BYTES}: it is damaged or not a store key")
    return key


def crypto_erase(path: Path | str) -> bool:
    """Destroy the key file for decommissioning: overwrite it with random bytes, flush, delete.

    Without the key every encrypted image and template in the database is unreadable, which is the
    point: it is the one step that makes the whole store unrecoverable, whatever copies of the database
    file exist. On flash storage the overwrite may land on fresh cells (wear levelling), so the old
    bytes can survive in the chip; media disposal per the CJIS policy still applies to the device.
    Returns False if there was no key file (already erased), True otherwise.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise StoreKeyFileError(f"key file {path} is not a regular file; refusing to erase it")
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.write(fd, secrets.token_bytes(max(st.st_size, KEY_BYTES)))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    fsync_dir(path.parent)
    return True


def _aad(record_id: str, label: str, context: bytes) -> bytes:
    """Associated data: format tag, record id, field label, then the caller's context bytes.

    The first three never contain a NUL byte, so the encoding is unambiguous with the free-form context
    last.
    """
    if "\x00" in record_id or "\x00" in label:
        raise ValueError("record id and label must not contain NUL")
    return b"\x00".join((_AAD_PREFIX, record_id.encode("utf-8"), label.encode("utf-8"), context))


class BlobCipher:
    """Encrypts and decrypts the store's blobs with one AES-256-GCM key.

    ``record_id``, ``label`` and ``context`` must be the same on both sides; they are not stored in
    the blob (the database row already holds them) but are authenticated, so a blob only opens in its
    own place. The store passes a digest of the record's plaintext metadata (booking number, ORI,
    pose, sha256, ...) as ``context``, so an edit to those columns is caught on the next read too.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise StoreKeyFileError(f"a store key is {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.fingerprint = key_fingerprint(key)

    def encrypt(self, plaintext: bytes, record_id: str, label: str, context: bytes = b"") -> bytes:
        """Encrypt ``plaintext`` for the field ``label`` of record ``record_id``."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, _aad(record_id, label, context))
        return bytes([BLOB_VERSION]) + nonce + sealed

    def decrypt(self, blob: bytes, record_id: str, label: str, context: bytes = b"") -> bytes:
        """Return the plaintext, or raise `DecryptError` if the blob does not authenticate."""
        where = f"{label} of record {record_id}"
        if len(blob) < 1 + NONCE_BYTES + TAG_BYTES:
            raise DecryptError(f"cannot decrypt {where}: the stored blob is truncated ({len(blob)} bytes)")
        if blob[0] != BLOB_VERSION:
            raise DecryptError(f"cannot decrypt {where}: unknown blob format {blob[0]}")
        nonce, body = blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, _aad(record_id, label, context))
        except InvalidTag:
            raise DecryptError(
                f"cannot decrypt {where}: authentication failed, so nothing was returned. Either the key "
                f"file is not the key this data was encrypted with, or the stored bytes (or the record "
                f"data bound to them) were changed or damaged") from None
