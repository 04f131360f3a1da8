"""``ansi-nist``: the record as an ANSI/NIST-ITL Type-1/2/10 transaction, ``{record_id}.eft``.

The builder and validator are :mod:`sync.county.gallery.nist`; the atomic drop with its pickup marker is
:func:`sync.county.gallery.export.drop_export`. A record dropped before (its marker exists) is not written
again, so a job repeated after a crash never hands the county's pickup a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sync.county.gallery.export import ExportError, ExportSettings, already_exported, drop_export, export_path
from sync.county.gallery.nist import NistConfig, NistExportError, require_codec
from sync.protocol.wire import WireRecord


@dataclass
class AnsiNistExporter:
    """ANSI/NIST-ITL files with the ``[export]`` table's TOT, DAI, time zone and Type-2 layout."""

    nist: NistConfig = field(default_factory=NistConfig)
    name: str = "ansi-nist"

    @classmethod
    def from_settings(cls, settings: ExportSettings) -> AnsiNistExporter:
        require_codec()  # refused at start-up, not on the first record
        return cls(settings.nist)

    def export(self, record: WireRecord, payload: bytes, folder: Path) -> Path:
        if already_exported(folder, record.record_id):
            return export_path(folder, record.record_id)
        try:
            return drop_export(record, folder, self.nist)
        except NistExportError as exc:
            raise ExportError(str(exc)) from None


EXPORTER = AnsiNistExporter
