"""Atomic file writes, one implementation for the station, the county and the build tools.

Keys, certificates, the station config, the agent's state files, the officer's draft, the broker
configuration, the model bundle and the gallery's exports are all written the same way: a hidden
temporary file beside the target (same file system, so the rename is atomic), created with its final
mode, written in full and fsync'ed, renamed over the target, then the folder fsync'ed. A reader sees the
old file or the new one, never half of one; a power cut leaves one of the two; a private key is never
readable by others, even for an instant. On any failure the temporary file is removed and an existing
target is left as it was. A crashed writer leaves only ``.{name}.{random}.tmp``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: fsync on a directory fails with these on file systems that do not support it: nothing to make durable.
_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


def write_file_atomic(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync the folder); returns the path.

    ``mode``: the file's exact permissions, set from the first byte (the umask does not apply); None for
    what ``open()`` gives a new file (0666 less the umask), for files that are nobody's secret.
    """
    return write_file_atomic_stream(path, lambda file: file.write(data), mode)


def write_file_atomic_stream(path: str | os.PathLike[str], write: Callable[[BinaryIO], object],
                             mode: int | None = None) -> Path:
    """As :func:`write_file_atomic`, the content written by ``write(file)`` in pieces: for a file as large
    as the memory that holds its content (a search index), which must not be built in memory first."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o666 if mode is None else mode)  # O_EXCL: never follows a planted symlink
    try:
        with os.fdopen(fd, "wb") as file:
            if mode is not None:
                os.fchmod(fd, mode)  # the umask may have removed bits we want (e.g. 0644 for a certificate)
            write(file)
            file.flush()
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def write_private_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Key material: owner read/write only (0600)."""
    return write_file_atomic(path, data, 0o600)


def write_public_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Certificates and public keys: world-readable (0644) so services under other users can read them."""
    return write_file_atomic(path, data, 0o644)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename, a new file or a removed file in ``directory`` durable. A file system that cannot
    fsync a directory is accepted (there is nothing more to do); any other failure is raised."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create (or tighten) a directory that holds key material: 0700."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
