"""The one atomic file write (keys, configs, drafts, exports, models)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sync.protocol import files


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        public = files.write_public_file(tmp_path / "ca.crt", b"cert")
        private = files.write_private_file(tmp_path / "tls.key", b"key")
    finally:
        os.umask(old)
    assert (mode_of(public), mode_of(private)) == (0o644, 0o600)
    assert public.read_bytes() == b"cert" and private.read_bytes() == b"key"


def test_without_a_mode_the_umask_applies(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = files.write_file_atomic(tmp_path / "acl", b"topic read #\n")
    finally:
        os.umask(old)
    assert mode_of(path) == 0o640


def test_a_failed_rename_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = files.write_file_atomic(tmp_path / "station.toml", b"old", 0o644)

    def broken(*_args: object) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(files.os, "replace", broken)
    with pytest.raises(OSError, match="I/O error"):
        files.write_file_atomic(target, b"new", 0o644)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["station.toml"]


def test_a_large_file_is_written_whole(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    assert files.write_file_atomic(tmp_path / "model.tflite", data).read_bytes() == data


def test_a_private_dir_is_0700(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    assert mode_of(files.make_private_dir(folder)) == 0o700
