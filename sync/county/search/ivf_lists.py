"""Inverted lists sized to what they hold: the memory a county must provision for an inverted file.

FAISS keeps each inverted list's vectors in a ``std::vector`` that grows by doubling when an entry is
added beyond its capacity. An index built by adding templates in batches therefore holds, on average, a
third more memory than its vectors (measured at 1 M templates: +717 MiB resident for 488 MiB of vectors,
1.47x), and a freshly loaded (exactly sized) index doubles every list the first time a record lands in
it, so a live gallery drifts towards twice its vectors. :class:`ListCapacity` stops both: before FAISS
adds a batch it gives every list that would overflow a fresh buffer of the size it needs plus
``1/HEADROOM`` (copying the entries over and swapping the buffers, so FAISS never reallocates), and
after a bulk build it trims every list to that size. The resident cost of a list is then at most
``1 + 1/HEADROOM`` times its vectors. The per-list id arrays (8 bytes per template, not reachable from
Python) still grow by doubling: at most 16 bytes per template, 3% of a 512-byte template.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import faiss
import numpy as np

HEADROOM = 16  # spare capacity per list: 1/16 of its entries (6%), so one add in 16 moves a list at most


def release_free_memory() -> None:
    """Hand freed heap pages back to the kernel (glibc keeps them otherwise, and the resident set with
    them): after trimming thousands of list buffers the freed ones sit in the middle of the heap."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class ListCapacity:
    """Capacity bookkeeping for the ``ArrayInvertedLists`` of one ``IndexIVF`` (see the module docstring)."""

    def __init__(self, index: faiss.IndexIVF) -> None:
        self.index = index
        self.lists = faiss.downcast_InvertedLists(index.invlists)
        if not isinstance(self.lists, faiss.ArrayInvertedLists):
            raise TypeError("capacity is managed for in-memory inverted lists only")
        self.code_size = int(self.lists.code_size)
        # a freshly loaded or built index: FAISS sized nothing larger than needed that we know of
        self.capacity = self.sizes()

    def sizes(self) -> np.ndarray:
        return np.array([self.lists.list_size(i) for i in range(self.lists.nlist)], dtype=np.int64)

    def _resize(self, list_no: int, entries: int) -> None:
        """Give ``list_no`` a buffer for exactly ``entries`` entries (at least its current ones)."""
        size = int(self.lists.list_size(list_no))
        entries = max(entries, size)
        used = size * self.code_size
        fresh = faiss.UInt8Vector()
        fresh.resize(entries * self.code_size)
        if used:
            faiss.rev_swig_ptr(fresh.data(), used)[:] = faiss.rev_swig_ptr(self.lists.get_codes(list_no), used)
        held = self.lists.codes.at(list_no)
        held.owned_data.swap(fresh)  # the old buffer leaves with ``fresh``
        held.resize(used)  # same size, no reallocation: refreshes the cached pointer to the new buffer
        self.capacity[list_no] = entries
        del fresh

    def reserve(self, vectors: np.ndarray) -> None:
        """Make room for ``vectors`` in the lists they will go to, before ``add_with_ids``."""
        _, assigned = self.index.quantizer.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        counts = np.bincount(assigned.ravel()[assigned.ravel() >= 0], minlength=self.lists.nlist)
        for list_no in np.flatnonzero(counts):
            need = int(self.lists.list_size(int(list_no))) + int(counts[list_no])
            if need > self.capacity[list_no]:
                self._resize(int(list_no), need + need // HEADROOM)

    def trim(self) -> None:
        """Every list down to its entries plus the headroom (after a bulk build), freed pages returned."""
        for list_no, size in enumerate(self.sizes()):
            want = int(size) + int(size) // HEADROOM
            if self.capacity[list_no] != want:
                self._resize(list_no, want)
        release_free_memory()
