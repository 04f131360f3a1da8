"""Inverted lists sized to what they hold: the memory a county must provision for an inverted file.

FAISS keeps each inverted list's vectors in a ``std::vector`` that grows by doubling when an entry is
added beyond its capacity. An index built by adding templates in batches therefore holds, on average, a
third more memory than its vectors (measured at 1 M templates: +717 MiB resident for 488 MiB of vectors,
1.47x), and an exactly sized index (freshly loaded) doubles every list the first time a record lands in
it, so a live gallery drifts towards twice its vectors.

FAISS does not let Python reserve or shrink one list, so :class:`ListCapacity` follows the capacity of
every list as the standard library grows it (one entry at a time: full means doubled) and, when the
lists hold more than ``1 + 1/SLACK`` times their entries, rebuilds them: each list copied into a buffer of
its entries plus ``1/HEADROOM``, the old list freed before the next one is copied (last to first), so
the rebuild needs one list of extra memory, not a second index. A rebuild copies every vector once
(about 0.3 s per 500 MiB) and comes after a bulk build, then about once per 1/16 of the gallery added
one record at a time (when the lists have used up their headroom). The per-list id arrays (8 bytes
per template, 1/64 of a template) are rebuilt with them; the old ids are freed when the new lists
replace the old ones.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import faiss
import numpy as np

HEADROOM = 16  # spare room per list after a rebuild: 1/16 of its entries
SLACK = 8  # rebuild when the lists hold more than 1 + 1/8 times their entries


def release_free_memory() -> None:
    """Hand freed heap pages back to the kernel (glibc keeps them otherwise, and the resident set with
    them): after a rebuild the freed list buffers sit in the middle of the heap."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def grown(capacity: np.ndarray, size: np.ndarray, added: np.ndarray) -> np.ndarray:
    """The capacity of lists that held ``size`` entries in ``capacity`` after ``added`` more, one by one
    (libstdc++: a full vector grows to twice its size, an empty one to what it needs)."""
    need = size + added
    cap = capacity.copy()
    full = need > cap
    cap[full & (cap == 0)] = 1
    while (full := need > cap).any():
        cap[full] *= 2
    return cap


class ListCapacity:
    """Capacity bookkeeping for the ``ArrayInvertedLists`` of one ``IndexIVF`` (see the module docstring)."""

    def __init__(self, index: faiss.IndexIVF) -> None:
        self.index = index
        if not isinstance(faiss.downcast_InvertedLists(index.invlists), faiss.ArrayInvertedLists):
            raise TypeError("capacity is managed for in-memory inverted lists only")
        self.size = self.sizes()
        self.capacity = self.size.copy()  # a loaded index is read into exactly sized lists

    @property
    def lists(self) -> faiss.ArrayInvertedLists:
        return faiss.downcast_InvertedLists(self.index.invlists)

    def sizes(self) -> np.ndarray:
        lists = self.lists
        return np.array([lists.list_size(i) for i in range(lists.nlist)], dtype=np.int64)

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """The lists ``vectors`` will be added to (ask before adding them)."""
        _, assigned = self.index.quantizer.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        return assigned.ravel()

    def _counts(self, assigned: np.ndarray) -> np.ndarray:
        return np.bincount(assigned[assigned >= 0], minlength=self.size.size)

    def _too_much(self, capacity: np.ndarray, size: np.ndarray) -> bool:
        return bool(capacity.sum() > size.sum() + size.sum() // SLACK + size.size)

    def adding(self, assigned: np.ndarray) -> None:
        """Before an add to the ``assigned`` lists: if FAISS would grow them past the limit, rebuild them
        now with room for the newcomers, so the add never doubles a list (no transient second copy)."""
        count = self._counts(assigned)
        if self._too_much(grown(self.capacity, self.size, count), self.size + count):
            self.rebuild(count)

    def follow(self, assigned: np.ndarray) -> None:
        """Follow an add of vectors to the ``assigned`` lists, keeping any room reserved for more (a load
        whose lists were allocated up front for everything it brings)."""
        count = self._counts(assigned)
        self.capacity = grown(self.capacity, self.size, count)
        self.size = self.size + count

    def added(self, assigned: np.ndarray) -> None:
        """Follow an add of vectors to the ``assigned`` lists; rebuild them if they hold too much room."""
        self.follow(assigned)
        if self._too_much(self.capacity, self.size):
            self.rebuild()

    def removed(self) -> None:
        self.size = self.sizes()  # a removal shrinks a list and keeps its buffer

    def rebuild(self, extra: np.ndarray | None = None) -> None:
        """Every list copied into a buffer of its entries (plus ``extra`` about to come) plus headroom, one
        list at a time."""
        old = self.lists
        nlist, code_size = int(old.nlist), int(old.code_size)
        fresh = faiss.ArrayInvertedLists(nlist, code_size)
        capacity = np.zeros(nlist, dtype=np.int64)
        for list_no in range(nlist - 1, -1, -1):
            size = int(old.list_size(list_no))
            later = size + (0 if extra is None else int(extra[list_no]))
            room = later + later // HEADROOM
            if room:
                fresh.resize(list_no, room)  # from empty: exactly this capacity
                fresh.resize(list_no, size)  # entries back to ``size``, the capacity stays
            if size:
                fresh.update_entries(list_no, 0, size, old.get_ids(list_no), old.get_codes(list_no))
            old.codes.resize(list_no)  # frees this list's vectors before the next is copied
            capacity[list_no] = room
        fresh.this.disown()
        self.index.replace_invlists(fresh, True)
        self.capacity = capacity
        release_free_memory()
