"""The benchmark's synthetic gallery stays honest: distances like the real templates', mates findable."""

from __future__ import annotations

import numpy as np

from tests.bench.search_data import GalleryModel, mated_probes
from tests.sync.county.search.conftest import Face


def test_generated_distances_match_the_real_templates(labelled_faces: list[Face]) -> None:
    model = GalleryModel.fit(templates=np.array([f.vector for f in labelled_faces]))
    gallery = model.chunk(0, 5000)
    probes, mates = mated_probes(model, 5000, 300)
    genuine = np.linalg.norm(probes - gallery[mates - 1], axis=1)
    impostor = np.linalg.norm(probes - gallery[(mates + 2500) % 5000], axis=1)
    assert 0.3 <= np.median(genuine) <= 0.5 and np.percentile(genuine, 95) < 0.6
    assert 0.75 <= np.median(impostor) <= 1.1 and np.percentile(impostor, 5) > 0.55
    assert 1.3 <= np.median(np.linalg.norm(gallery, axis=1)) <= 1.7  # dlib templates are not unit vectors
    # the same chunk regenerates identically (the exact reference search relies on it)
    assert np.array_equal(model.chunk(0, 5000), gallery)
