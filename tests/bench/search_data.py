"""Synthetic galleries fitted to real dlib templates, for the search benchmarks.

The model, and what it leaves out:

* Real templates: every labelled single-person photo in the shared data, embedded with the installed bundle
  (the stations' own path). Their mean ``mu`` and covariance ``S`` are the fit; 51 photos span at most 50
  directions, so the 78 others get the median of the smaller half of the non-zero eigenvalues (a face
  varies in every direction; leaving them at zero would make the data artificially easy to index).
* A booking's template is ``centre + e``: ``centre ~ N(mu, B)`` for each identity, ``e ~ N(0, w^2 I)``
  for each capture. ``w`` makes the genuine distance (two captures of one identity, ``sqrt(2 * 128) * w``)
  0.38, the median of the real same-person pairs; ``B`` is ``S`` (with the filled directions) scaled to
  trace ``tr(S) - 128 w^2``, since the real covariance holds both the between-identity and the capture
  variation. That puts impostor distances (``sqrt(2 tr(B) + 2 * 128 w^2)``) at the real median, about 0.84.
* Not modelled: heavy tails (a Gaussian in 128 dimensions concentrates distances, so the impostor spread
  is narrower than the real 0.72-0.99), twins and look-alikes, ageing, and images too poor to embed. Each
  run prints the genuine and impostor distances it produced beside the real ones, so a drift shows.

A gallery is generated in chunks (``chunk(c)``), each from its own seed, so a 15 M gallery is never held
twice in memory and the same chunk can be regenerated for the exact reference search.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

DIM = 128
GENUINE_MEDIAN = 0.38
CHUNK = 100_000


@functools.lru_cache(maxsize=1)
def real_templates() -> tuple[np.ndarray, tuple[str, ...]]:
    """Templates and identities of the labelled single-person photos (computed with the installed bundle)."""
    from sync.county.search.probe import Prober
    from tests.conftest import read_labels, shared_data_dir

    rows = read_labels(shared_data_dir(), "single")
    if not rows:
        raise SystemExit("no labelled faces found: set $BOOKING_SHARED_DATA to the shared data folder")
    prober = Prober()
    return np.array([prober.template(r["path"]) for r in rows]), tuple(r["identity"] for r in rows)


def real_distances() -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor distances among the real templates (for the side-by-side check)."""
    x, ids = real_templates()
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    same = np.array([[a == b for b in ids] for a in ids])
    iu = np.triu_indices(len(ids), 1)
    return d[iu][same[iu]], d[iu][~same[iu]]


@dataclass(frozen=True)
class GalleryModel:
    mean: np.ndarray
    between: np.ndarray  # (128, 128) square root of B: centre = mean + z @ between
    within: float  # w
    seed: int = 12

    @classmethod
    def fit(cls, seed: int = 12, templates: np.ndarray | None = None) -> GalleryModel:
        """The model fitted to ``templates`` (default: the labelled faces, embedded now)."""
        x = real_templates()[0] if templates is None else np.asarray(templates)
        cov = np.cov(x.astype(np.float64).T)
        values, vectors = np.linalg.eigh(cov)
        nonzero = np.sort(values[values > 1e-9 * values.max()])
        fill = float(np.median(nonzero[: len(nonzero) // 2]))
        values = np.where(values > 1e-9 * values.max(), values, fill)
        within = GENUINE_MEDIAN / np.sqrt(2 * DIM)
        target = max(float(np.trace(cov)) - DIM * within**2, 1e-6)
        values = values * target / values.sum()
        root = (vectors * np.sqrt(values)) @ vectors.T
        return cls(x.mean(0).astype(np.float64), root, float(within), seed)

    def centres(self, c: int, size: int = CHUNK) -> np.ndarray:
        """Identity centres of chunk ``c`` (identities ``c * CHUNK + 1 ...``)."""
        rng = np.random.default_rng([self.seed, c, 0])
        return (self.mean + rng.standard_normal((size, DIM)) @ self.between).astype(np.float32)

    def capture(self, centres: np.ndarray, stream: int, c: int) -> np.ndarray:
        """One capture of each centre; ``stream`` 0 is the gallery's booking, 1.. are later probes."""
        rng = np.random.default_rng([self.seed, c, 1 + stream])
        return (centres + rng.normal(0.0, self.within, centres.shape)).astype(np.float32)

    def chunk(self, c: int, size: int = CHUNK) -> np.ndarray:
        """The gallery templates of chunk ``c``: ids ``c * CHUNK + 1 ... c * CHUNK + size``."""
        return self.capture(self.centres(c, size), 0, c)


def chunk_sizes(n: int) -> list[int]:
    return [min(CHUNK, n - start) for start in range(0, n, CHUNK)]


def mated_probes(model: GalleryModel, n: int, count: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``count`` probes, each a second capture of a random gallery identity: (probe vectors, mate ids)."""
    rng = np.random.default_rng(seed)
    mates = np.sort(rng.choice(n, size=min(count, n), replace=False)) + 1
    probes = np.empty((mates.size, DIM), dtype=np.float32)
    for c, size in enumerate(chunk_sizes(n)):
        inside = (mates > c * CHUNK) & (mates <= c * CHUNK + size)
        if inside.any():
            second = model.capture(model.centres(c, size), 1, c)
            probes[inside] = second[mates[inside] - c * CHUNK - 1]
    order = rng.permutation(mates.size)
    return probes[order], mates[order]
