"""`make demo`: show the vision core on a real portrait, start to finish, in a few seconds."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from appliance.imageio import read_image


def sample_portrait() -> np.ndarray:
    """The astronaut photograph (Eileen Collins, NASA, public domain) that scikit-image ships."""
    try:
        from skimage import data
    except ImportError as exc:
        raise click.ClickException(
            "the demo portrait comes from scikit-image: pip install 'booking-station[demo]'"
        ) from exc
    return np.ascontiguousarray(data.astronaut())


def run_demo(vision, image_path: Path | None) -> int:
    image = read_image(image_path) if image_path else sample_portrait()
    name = str(image_path) if image_path else "scikit-image astronaut portrait"
    click.echo(f"Booking-station vision demo on the {name} ({image.shape[1]}x{image.shape[0]})")
    click.echo(f"  models: {vision.bundle.root} (embedding {vision.bundle.embedding})")

    t0 = time.perf_counter()
    faces = vision.analyzer.analyze(image, landmarks=True, iris=True)
    t1 = time.perf_counter()
    if not faces:
        click.echo("  no face found")
        return 1
    face = faces[0]
    click.echo(f"  faces found: {len(faces)}  (detect + landmarks + iris: {1000 * (t1 - t0):.1f} ms)")
    x0, y0, x1, y1 = face.box
    click.echo(f"  largest face: box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}), "
               f"detector score {face.score:.3f} ({face.detection.model} range)")
    (rx, ry), (lx, ly) = face.eyes
    ied = float(np.hypot(lx - rx, ly - ry))
    click.echo(f"  eyes (iris centres): right ({rx:.1f}, {ry:.1f}), left ({lx:.1f}, {ly:.1f}); "
               f"inter-eye distance {ied:.1f} px")
    t2 = time.perf_counter()
    template = vision.embedder.embed_face(image, face)
    t3 = time.perf_counter()
    click.echo(f"  template: {template.size}-D from {vision.bundle.embedding} "
               f"(align + embed: {1000 * (t3 - t2):.1f} ms), norm {np.linalg.norm(template):.3f}")
    mirrored = vision.template(np.ascontiguousarray(image[:, ::-1]))
    if mirrored is not None:
        result = vision.embedder.compare(template, mirrored)
        click.echo(f"  same face, mirrored image: distance {result.distance:.3f} "
                   f"(threshold {result.threshold}) -> {'match' if result.same_person else 'no match'}")
    return 0
