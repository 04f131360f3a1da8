"""``GalleryStore``: the one interface the receiver, the worker and the CLIs use, assembled from the table
groups' mixins.

Nothing but the composition lives here, so the list of bases is the table of contents of the store: each
mixin's module holds one table group's SQL and :class:`~sync.county.gallery.store.core.StoreCore` the
shared machinery; ``SQLiteStore`` and ``PostgresStore`` add a dialect.
"""

from __future__ import annotations

from sync.county.gallery.jobs import JobQueueMixin
from sync.county.gallery.store.audit import AuditMixin
from sync.county.gallery.store.devices import DevicesMixin
from sync.county.gallery.store.records import RecordsMixin
from sync.county.gallery.store.rejections import RejectionsMixin
from sync.county.gallery.store.status import StationStatusMixin
from sync.county.gallery.store.templates import TemplatesMixin


class GalleryStore(
    DevicesMixin, RecordsMixin, TemplatesMixin, RejectionsMixin, AuditMixin, StationStatusMixin, JobQueueMixin
):
    """Storage behind the gallery receiver and the CLI. Thread-safe: one lock per store (see
    :class:`~sync.county.gallery.store.core.StoreCore`). The work queue's methods come from
    :class:`~sync.county.gallery.jobs.JobQueueMixin`."""

    def reader(self) -> GalleryStore:
        """Another connection to the same database, for a thread that only reads (the receiver's checkers look
        up each record's device there, instead of queueing on this store's lock behind a group commit). A store
        that cannot open a second connection (SQLite ``:memory:``) returns itself."""
        return self

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
