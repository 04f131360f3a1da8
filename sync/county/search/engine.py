"""The search engine contract: integer ids and 128-D float32 templates in, nearest ids by L2 distance out.

dlib templates are not unit vectors (their norms spread around 1.5), so inner product ranks them
differently from Euclidean distance: every engine ranks by L2 and reports the true (not squared)
Euclidean distance, recomputed in float64 from the stored vector for the candidates it returns, so two
engines agree on the numbers and a threshold such as 0.6 means the same everywhere.

Ids are the gallery store's template sequence numbers (positive int64), so an engine never needs to
know about records; :mod:`sync.county.search.index` maps them back and filters them against the store.
``add`` is idempotent (an id already present is skipped): a catch-up after a crash may offer the same
template twice. ``watermark`` is the highest store sequence the engine has durably taken in; it is
saved with the engine's data by :meth:`SearchEngine.checkpoint`, never ahead of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

DIM = 128


class SearchEngineError(Exception):
    """An engine that cannot work (bad files, database down, wrong shapes): one line for the operator."""


@dataclass(frozen=True, order=True)
class Hit:
    """One neighbour: Euclidean distance first so a list of hits sorts by distance."""

    distance: float
    id: int


def as_vectors(vectors: object) -> np.ndarray:
    """``vectors`` as a C-contiguous (N, 128) float32 array, or SearchEngineError."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != DIM:
        raise SearchEngineError(f"templates must be {DIM} float32 values each, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise SearchEngineError("templates must be finite numbers")
    return array


def as_ids(ids: object, count: int | None = None) -> np.ndarray:
    array = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if count is not None and array.size != count:
        raise SearchEngineError(f"{array.size} ids for {count} templates")
    if array.size and array.min() <= 0:
        raise SearchEngineError("ids must be positive")
    return array


def exact_hits(query: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int) -> list[Hit]:
    """The ``k`` nearest of ``vectors`` to ``query`` by float64 Euclidean distance (the re-ranking step)."""
    if ids.size == 0:
        return []
    diff = vectors.astype(np.float64) - query.astype(np.float64).reshape(1, -1)
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    order = np.lexsort((ids, dist))[:k]
    return [Hit(float(dist[i]), int(ids[i])) for i in order]


class SearchEngine(ABC):
    """Nearest-neighbour search over (id, 128-D float32 template) pairs by Euclidean distance."""

    name = "engine"

    @abstractmethod
    def add(self, ids: object, vectors: object) -> int:
        """Add templates; ids already present are skipped. Returns how many were new."""

    @abstractmethod
    def remove(self, ids: object) -> int:
        """Remove templates by id (unknown ids are ignored). Returns how many were removed."""

    @abstractmethod
    def search(self, query: object, k: int) -> list[Hit]:
        """The ``k`` nearest templates to ``query``, nearest first, with exact Euclidean distances."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def ids(self) -> np.ndarray:
        """Every id held, sorted ascending (int64)."""

    @property
    @abstractmethod
    def watermark(self) -> int:
        """The highest store sequence durably taken in (0 for an empty engine)."""

    @abstractmethod
    def checkpoint(self, watermark: int, *, force: bool = False) -> bool:
        """Record that everything up to ``watermark`` is in, and make it durable (an engine whose saves are
        costly may defer until ``force`` or its save interval). Returns True when it was saved."""

    @abstractmethod
    def clear(self) -> None:
        """Drop everything (a rebuild starts here); the watermark goes back to 0."""

    def describe(self) -> dict[str, object]:
        """Engine facts for ``index status``."""
        return {"engine": self.name, "count": self.count(), "watermark": self.watermark}

    @abstractmethod
    def close(self) -> None:
        """Release resources, saving anything pending."""

    def __enter__(self) -> SearchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
