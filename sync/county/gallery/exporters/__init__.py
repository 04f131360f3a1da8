"""Export formats: one module per format in this package, chosen by ``[export] formats`` in county.toml.

Each format is a plug-in module named after it (``ansi-nist`` -> ``ansi_nist.py``) that sets ``EXPORTER`` to a
class with a ``name``, a ``from_settings(settings)`` constructor and ``export(record, payload, folder) ->
Path``. The work queue runs one ``export:<name>`` job per stored record and format, off the ack path
(:mod:`sync.county.gallery.worker`); a format therefore needs nothing but its module:

* ``record`` is the verified record (re-verified from the store, so a file always matches the database),
  ``payload`` the signed bytes exactly as the station sent them (a format that archives the signature);
* the file name must depend on the record only and the write must be atomic
  (:func:`sync.protocol.files.write_file_atomic`), so a job repeated after a crash gives the same file;
* :class:`~sync.county.gallery.export.ExportError` means "this record can never be exported this way"
  (parked as a failed job); any other exception (a full disk, an unwritable folder) is retried.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sync.county.gallery.jobs import Job
from sync.county.gallery.worker import JobHandler, PermanentJobError
from sync.protocol.wire import WireRecord

if TYPE_CHECKING:
    from sync.county.gallery.export import ExportSettings
    from sync.county.gallery.store import GalleryStore

_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


class Exporter(Protocol):
    """One export format."""

    name: str

    def export(self, record: WireRecord, payload: bytes, folder: Path) -> Path: ...


class UnknownFormatError(ValueError):
    """``[export] formats`` names a format this installation has no module for."""


def available() -> list[str]:
    """The format names of the modules in this package."""
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def check_format(name: object) -> str:
    """``name`` if a module implements it, else :class:`UnknownFormatError` listing the ones that exist."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name not in available():
        raise UnknownFormatError(f"unknown export format {str(name)[:40]!r} (known: {', '.join(available())})")
    return name


def load_exporter(name: str, settings: ExportSettings) -> Exporter:
    """The exporter of format ``name``, configured from the ``[export]`` table."""
    module = importlib.import_module(f"{__name__}.{check_format(name).replace('-', '_')}")
    factory: Callable[[ExportSettings], Exporter] = module.EXPORTER.from_settings
    exporter = factory(settings)
    if exporter.name != name:
        raise UnknownFormatError(f"export module {module.__name__} says it is {exporter.name!r}, not {name!r}")
    return exporter


def job_kind(name: str) -> str:
    """The work-queue kind of format ``name``."""
    return f"export:{name}"


def export_handlers(store: GalleryStore, settings: ExportSettings, folder: Path) -> dict[str, JobHandler]:
    """One work-queue handler per configured format: load the record from the store, re-verify it, and
    hand it to the format's exporter. Unknown, tampered or unexportable records are permanent failures;
    anything else (a database or disk error) is retried."""
    from sync.county.gallery.export import ExportError, load_verified

    def handler(exporter: Exporter) -> JobHandler:
        def run(job: Job) -> str:
            try:
                record, payload = load_verified(store, job.record_id)
                return str(exporter.export(record, payload, folder))
            except ExportError as exc:
                raise PermanentJobError(str(exc)) from None

        return run

    return {job_kind(name): handler(load_exporter(name, settings)) for name in settings.formats}
