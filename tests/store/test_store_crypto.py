"""AES-256-GCM blobs, the key file's permissions, and crypto-erase."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance.store import DecryptError, StoreKeyFileError
from appliance.store.crypto import BlobCipher, create_key_file, crypto_erase, load_key
from appliance.store.records import new_record_id


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_key_file_is_created_private_in_a_private_directory(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        key = create_key_file(tmp_path / "keys" / "store.key")
    finally:
        os.umask(old)
    assert len(key) == 32
    assert mode(tmp_path / "keys") == 0o700
    assert mode(tmp_path / "keys" / "store.key") == 0o600
    assert load_key(tmp_path / "keys" / "store.key") == key
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["store.key"], "no temporary file left behind"


def test_second_creation_keeps_the_first_key(tmp_path: Path) -> None:
    path = tmp_path / "store.key"
    first = create_key_file(path)
    assert create_key_file(path) == first


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_key_readable_or_writable_by_others_is_refused(tmp_path: Path, bad_mode: int) -> None:
    path = tmp_path / "store.key"
    create_key_file(path)
    os.chmod(path, bad_mode)
    with pytest.raises(StoreKeyFileError) as info:
        load_key(path)
    assert f"{bad_mode:04o}" in str(info.value) and "chmod 600" in str(info.value)


def test_missing_and_damaged_key_files(tmp_path: Path) -> None:
    with pytest.raises(StoreKeyFileError, match="does not exist"):
        load_key(tmp_path / "none.key")
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 16)
    os.chmod(short, 0o600)
    with pytest.raises(StoreKeyFileError, match="16 bytes, not 32"):
        load_key(short)


def test_round_trip_and_fresh_nonce_per_blob() -> None:
    cipher = BlobCipher(os.urandom(32))
    rid = new_record_id()
    a = cipher.encrypt(b"image bytes", rid, "capture:frontal:0")
    b = cipher.encrypt(b"image bytes", rid, "capture:frontal:0")
    assert a != b and a[1:13] != b[1:13]
    assert len(a) == 1 + 12 + len(b"image bytes") + 16
    assert cipher.decrypt(a, rid, "capture:frontal:0") == b"image bytes"


def test_wrong_key_gives_a_clear_decrypt_error() -> None:
    rid = new_record_id()
    blob = BlobCipher(os.urandom(32)).encrypt(b"secret", rid, "capture:frontal:0")
    with pytest.raises(DecryptError) as info:
        BlobCipher(os.urandom(32)).decrypt(blob, rid, "capture:frontal:0")
    assert "not the key" in str(info.value) and rid in str(info.value)


def test_every_flipped_byte_is_detected() -> None:
    cipher = BlobCipher(os.urandom(32))
    rid = new_record_id()
    blob = cipher.encrypt(os.urandom(300), rid, "capture:frontal:0")
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            damaged = bytearray(blob)
            damaged[i] ^= bit
            with pytest.raises(DecryptError):
                cipher.decrypt(bytes(damaged), rid, "capture:frontal:0")
    with pytest.raises(DecryptError, match="truncated"):
        cipher.decrypt(blob[:20], rid, "capture:frontal:0")


def test_blob_only_opens_for_its_own_record_label_and_context() -> None:
    cipher = BlobCipher(os.urandom(32))
    rid = new_record_id()
    blob = cipher.encrypt(b"face", rid, "capture:frontal:0", b"ctx")
    assert cipher.decrypt(blob, rid, "capture:frontal:0", b"ctx") == b"face"
    for other in [(new_record_id(), "capture:frontal:0", b"ctx"), (rid, "capture:left_profile:1", b"ctx"),
                  (rid, "capture:frontal:0", b"other")]:
        with pytest.raises(DecryptError):
            cipher.decrypt(blob, *other)


def test_crypto_erase_destroys_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "store.key"
    key = create_key_file(path)
    blob = BlobCipher(key).encrypt(b"face", "r", "l")
    assert crypto_erase(path) is True
    assert not path.exists()
    assert crypto_erase(path) is False, "erasing twice is harmless"
    with pytest.raises(DecryptError):  # whatever key is made next cannot open old data
        BlobCipher(create_key_file(path)).decrypt(blob, "r", "l")
