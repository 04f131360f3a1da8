"""Reader for dlib's `shape_predictor` files (`shape_predictor_5_face_landmarks.dat`) and their conversion
to the compact array file the device runs (`appliance.vision.shape_predictor`).

Templates the county can mix with dlib's own are only possible if our chips are cut from dlib's five
landmarks, so we read dlib's trained regression-tree cascade ourselves (no dlib on the build machine or
the device) with the same strict integer/float reader as the descriptor weights (`dlib_dat._Reader`).

Layout of the file (dlib's `serialize(shape_predictor)`), all in dlib's portable encoding:

- version integer (1);
- the mean shape: a column matrix written as -rows, -columns, then rows*columns floats (x0, y0, x1, ...);
- the forests: a count of cascade levels, each a count of trees, each tree a count of splits
  (idx1, idx2 unsigned integers, threshold float) followed by a count of leaves, each leaf a column
  matrix of shape deltas;
- per cascade level: the count and the anchor landmark index of each feature pixel;
- per cascade level: the count and the (dx, dy) float offset of each feature pixel from its anchor, in
  the mean shape's normalised coordinates.

The conversion keeps exactly these numbers (float32 as dlib holds them), packed into dense arrays; it
refuses cascades whose trees are not all complete binary trees of one depth, which dlib's trainer
always produces and the device's vectorised evaluation relies on.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware.models.dlib_dat import DatFormatError, _Reader

# Sanity bounds: far above any trained predictor, far below what corrupt counts would allocate.
_MAX_COUNT = 1 << 20
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShapePredictorArrays:
    """A dlib shape predictor as dense arrays (C cascade levels, T trees, S splits, L = S + 1 leaves,
    F feature pixels, P landmarks)."""

    initial_shape: np.ndarray  # (P, 2) float32, mean shape in the detection box's unit square
    split_idx: np.ndarray  # (C, T, S, 2) int32, the two feature pixels each split compares
    split_thresh: np.ndarray  # (C, T, S) float32
    leaf_values: np.ndarray  # (C, T, L, P, 2) float32, shape deltas added at each leaf
    anchor_idx: np.ndarray  # (C, F) int32, landmark each feature pixel is placed relative to
    deltas: np.ndarray  # (C, F, 2) float32, offset from the anchor in mean-shape coordinates

    @property
    def num_parts(self) -> int:
        return int(self.initial_shape.shape[0])

    @property
    def tree_depth(self) -> int:
        return int(math.log2(self.leaf_values.shape[2]))

    def save(self, path: Path | str) -> None:
        """Write the arrays as an uncompressed .npz (byte-identical for identical input)."""
        buf = io.BytesIO()
        np.savez(buf, format_version=np.int32(FORMAT_VERSION), **self.as_dict())
        Path(path).write_bytes(buf.getvalue())

    def as_dict(self) -> dict[str, np.ndarray]:
        return {
            "initial_shape": self.initial_shape,
            "split_idx": self.split_idx,
            "split_thresh": self.split_thresh,
            "leaf_values": self.leaf_values,
            "anchor_idx": self.anchor_idx,
            "deltas": self.deltas,
        }


def _count(r: _Reader, what: str) -> int:
    at = r.pos
    n = r.unsigned(what)
    if n > _MAX_COUNT:
        raise DatFormatError(at, f"a plausible {what} (at most {_MAX_COUNT})", str(n))
    return n


def _column(r: _Reader, what: str) -> np.ndarray:
    """A dlib column matrix<float,0,1>: written with negated dimensions, then its values."""
    at = r.pos
    rows, cols = -r.integer(f"{what} rows"), -r.integer(f"{what} columns")
    if cols != 1 or not 0 < rows <= _MAX_COUNT:
        raise DatFormatError(at, f"a column matrix ({what})", f"{rows} x {cols}")
    return np.array([r.float(what) for _ in range(rows)], dtype=np.float32)


def _tree(r: _Reader, at_level: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    n_splits = _count(r, f"split count (cascade {at_level})")
    idx = np.empty((n_splits, 2), np.int64)
    thresh = np.empty(n_splits, np.float32)
    for s in range(n_splits):
        idx[s] = r.unsigned("split idx1"), r.unsigned("split idx2")
        thresh[s] = r.float("split threshold")
    at = r.pos
    n_leaves = _count(r, "leaf count")
    if n_leaves != n_splits + 1 or n_leaves & (n_leaves - 1):
        raise DatFormatError(at, f"{n_splits + 1} leaves (a complete binary tree)", str(n_leaves))
    leaves = [_column(r, "leaf value") for _ in range(n_leaves)]
    return idx, thresh, leaves


def _read_forests(r: _Reader, num_parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    levels = _count(r, "cascade count")
    idx_all, thresh_all, leaves_all = [], [], []
    shape: tuple[int, int] | None = None
    for c in range(levels):
        at = r.pos
        n_trees = _count(r, f"tree count (cascade {c})")
        trees = [_tree(r, c) for _ in range(n_trees)]
        sizes = {(t[0].shape[0], len(t[2])) for t in trees}
        here = (n_trees, next(iter(sizes))[0]) if len(sizes) == 1 else None
        if here is None or (shape is not None and here != shape):
            raise DatFormatError(at, "every cascade with the same number of equally deep trees", f"cascade {c}")
        shape = here
        for idx, thresh, leaves in trees:
            if any(leaf.size != 2 * num_parts for leaf in leaves):
                raise DatFormatError(at, f"leaf values of {2 * num_parts} numbers", f"cascade {c}")
            idx_all.append(idx)
            thresh_all.append(thresh)
            leaves_all.append(np.stack(leaves).reshape(-1, num_parts, 2))
    if not levels or shape is None:
        raise DatFormatError(r.pos, "at least one cascade level")
    n_trees, n_splits = shape
    return (
        np.stack(idx_all).reshape(levels, n_trees, n_splits, 2),
        np.stack(thresh_all).reshape(levels, n_trees, n_splits),
        np.stack(leaves_all).reshape(levels, n_trees, n_splits + 1, num_parts, 2),
    )


def _per_level(r: _Reader, levels: int, what: str, read_one) -> list[list]:
    at = r.pos
    n = _count(r, f"{what} level count")
    if n != levels:
        raise DatFormatError(at, f"{levels} levels of {what} (one per cascade)", str(n))
    return [[read_one() for _ in range(_count(r, f"{what} count"))] for _ in range(n)]


def parse_shape_predictor(data: bytes) -> ShapePredictorArrays:
    """Parse the bytes of a dlib shape predictor; `DatFormatError` names the offset of anything unexpected."""
    r = _Reader(data)
    version = r.integer("shape_predictor version")
    if version != 1:
        raise DatFormatError(0, "shape_predictor version 1", str(version))
    initial = _column(r, "initial shape")
    if initial.size % 2:
        raise DatFormatError(0, "an initial shape of (x, y) pairs", f"{initial.size} numbers")
    num_parts = initial.size // 2
    split_idx, split_thresh, leaf_values = _read_forests(r, num_parts)
    levels = split_idx.shape[0]
    anchors = _per_level(r, levels, "anchor index", lambda: r.unsigned("anchor index"))
    deltas = _per_level(r, levels, "pixel delta", lambda: (r.float("delta x"), r.float("delta y")))
    if r.remaining():
        raise DatFormatError(r.pos, "end of file after the pixel deltas", f"{r.remaining()} more bytes")
    n_feat = {len(a) for a in anchors} | {len(d) for d in deltas}
    if len(n_feat) != 1:
        raise DatFormatError(r.pos, "the same number of feature pixels in every cascade", str(sorted(n_feat)))
    anchor_idx = np.array(anchors, dtype=np.int64)
    n_pixels = anchor_idx.shape[1]
    if anchor_idx.max() >= num_parts or split_idx.max() >= n_pixels:
        raise DatFormatError(r.pos, "anchor and split indices inside the shape and the feature pixels")
    return ShapePredictorArrays(
        initial_shape=initial.reshape(num_parts, 2),
        split_idx=split_idx.astype(np.int32),
        split_thresh=split_thresh,
        leaf_values=leaf_values,
        anchor_idx=anchor_idx.astype(np.int32),
        deltas=np.array(deltas, dtype=np.float32),
    )


def read_shape_predictor(path: Path | str) -> ShapePredictorArrays:
    return parse_shape_predictor(Path(path).read_bytes())


def convert(dat: Path | str, dest: Path | str) -> ShapePredictorArrays:
    """Read dlib's .dat and write the device's .npz; returns what was written."""
    arrays = read_shape_predictor(dat)
    arrays.save(dest)
    return arrays
