"""`booking-station`: the device-side command line.

Every command reads the station config (`--config`, default /etc/booking-station/station.toml) and
prints plain text for people or, with `--json`, one JSON object for machines (`analyze` and `capture`
stream one per line; see :mod:`sync.cli_conventions`). Errors are one
clear line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from appliance import __version__
from appliance.cli_support import (
    EXIT_INPUT,
    capture_standard_option,
    fail,
    load_group_config,
    quality_flags,
    standards_dir_option,
    with_flags,
)
from appliance.config import DEFAULT_CONFIG, StationConfig
from appliance.imageio import ImageError, read_image, set_max_pixels
from appliance.vision.bundle import Bundle, BundleError
from appliance.vision.runtime import RuntimeMissing
from sync.cli_conventions import RootGroup
from sync.protocol.files import write_file_atomic


class Vision:
    """The loaded vision stack, built once per command from the config."""

    def __init__(self, config: StationConfig) -> None:
        from appliance.vision.embedder import Embedder
        from appliance.vision.pipeline import FaceAnalyzer

        self.bundle = config.vision.load_bundle()
        self.options = config.vision.runtime_options()
        self.analyzer = FaceAnalyzer(self.bundle, self.options)
        self._embedder = None
        self._embedder_cls = Embedder

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = self._embedder_cls(self.bundle, self.options)
        return self._embedder

    def template(self, image: np.ndarray, aligned: bool = False) -> np.ndarray | None:
        """Template of the largest face (or of the whole image when it is an aligned chip)."""
        if aligned:
            return self.embedder.embed_chip(image)
        faces = self.analyzer.analyze(image, landmarks=True, iris=False)
        if not faces:
            return None
        return self.embedder.embed_face(image, faces[0])


def open_vision(ctx: click.Context) -> Vision:
    try:
        return Vision(ctx.obj["config"])
    except (BundleError, RuntimeMissing) as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def face_summary(face) -> dict:
    """The vision part of `analyze` output that later tools rely on (see README, 'analyze')."""
    return {
        "box": [round(float(v), 1) for v in face.box],
        "score": round(float(face.score), 4),
        "eyes": [[round(float(x), 1), round(float(y), 1)] for x, y in face.eyes],
    }


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="booking-station")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help=f"station config file (default: {DEFAULT_CONFIG} if it exists)")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Booking-station appliance: mug-shot capture, face quality and templates on the device."""
    set_max_pixels(load_group_config(ctx, config_path).vision.max_pixels)


def _open_engine(ctx: click.Context, vision: Vision, standard: str, standards_dir: Path | None):
    """The quality engine for the flags' capture standard, with the county folder of the flag, else of
    ``[quality] standards_dir`` (the flags are the config's top layer)."""
    from appliance.quality import QualityEngine, QualityProfileError

    quality = with_flags(ctx.obj["config"], quality_flags(standard, standards_dir)).quality
    county_dir = Path(quality.standards_dir) if quality.standards_dir else None
    try:
        return QualityEngine(vision.analyzer, quality.capture_standard, county_dir=county_dir)
    except QualityProfileError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def _quality_text(path: Path, out: dict) -> list[str]:
    verdict = "PASSED" if out["passed"] else "FAILED"
    lines = [f"  profile {out['profile']}: {verdict}"]
    lines += [f"  - {g['message']} [{g['code']}]" for g in out["guidance"]]
    for name, m in out["measures"].items():
        raw = "n/a" if m["raw"] is None else f"{m['raw']:.4g}"
        score = "n/a" if m["score"] is None else f"{m['score']:.0f}"
        mark = {True: "ok", False: "FAIL"}.get(m.get("passed"), "")
        why = f" ({m['reason']})" if "reason" in m else ""
        lines.append(f"    {name:<28} raw {raw:>9}  score {score:>4}  {mark}{why}")
    return lines


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per image, one per line")
@capture_standard_option("also run every quality measure and this capture standard's gates "
                          "(nist-sap30, nist-sap40, icao, ...)")
@standards_dir_option()
@click.pass_context
def analyze(ctx: click.Context, images: tuple[Path, ...], as_json: bool, capture_standard: str | None,
            standards_dir: Path | None) -> None:
    """Find faces and eyes in IMAGES; with --capture-standard, assess them against a mug-shot standard.

    For each image: the number of faces, and for the largest face its box [x0, y0, x1, y1], detector
    score and eye centres (subject's right eye first), in image pixels. With --capture-standard, also
    `profile` (the standard's name), `passed`, every quality measure (`measures: {name: {raw, score[,
    passed][, reason]}}`, `passed` only on the standard's gates) and the officer's `guidance` ([{code,
    message}]); an image without a face
    gets `passed: false` and a `no_face` entry (exit status 0). An unreadable image is reported and
    skipped; the exit status is then 2 (an input error, as for every station command).
    """
    vision = open_vision(ctx)
    engine = _open_engine(ctx, vision, capture_standard, standards_dir) if capture_standard else None
    status = 0
    for path in images:
        try:
            image = read_image(path)
        except ImageError as exc:
            click.echo(f"error: {exc}", err=True)
            if as_json:
                click.echo(json.dumps({"image": str(path), "error": str(exc)}))
            status = EXIT_INPUT
            continue
        faces = vision.analyzer.analyze(image, landmarks=True, iris=True)
        result: dict = {"image": str(path), "faces": len(faces)}
        if faces:
            result["face"] = face_summary(faces[0])
        quality = None
        if engine is not None:
            quality = engine.full(image, faces=faces).to_json()
            result.update({"profile": quality["profile"], "passed": quality["passed"],
                           "measures": quality["measures"], "guidance": quality["guidance"]})
        if as_json:
            click.echo(json.dumps(result))
            continue
        if faces:
            f = result["face"]
            click.echo(f"{path}: {len(faces)} face(s); largest at {f['box']} score {f['score']}, "
                       f"eyes {f['eyes'][0]} (right) {f['eyes'][1]} (left)")
        else:
            click.echo(f"{path}: no face found")
        if quality is not None:
            click.echo("\n".join(_quality_text(path, quality)))
    sys.exit(status)


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@capture_standard_option("the capture standard whose output geometry to produce (nist-sap30, nist-sap40, icao, "
                          "...); required", required=True)
@standards_dir_option()
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="JPEG file to write")
@click.option("--json", "as_json", is_flag=True, help="print the achieved geometry as JSON")
@click.pass_context
def standardize(ctx: click.Context, image: Path, capture_standard: str, standards_dir: Path | None, output: Path,
                as_json: bool) -> None:
    """Level the eyes, crop and scale IMAGE to the capture standard's geometry and write a fresh JPEG.

    The largest face is used. The JPEG is newly encoded (no EXIF or other metadata from IMAGE) at the
    profile's quality. Exit status 2 (an input error), with the reason, when IMAGE has no face or too few
    pixels for the profile (the source is never enlarged by more than the profile's `max_upscale`, 5% as
    shipped).
    """
    from appliance.quality import StandardizeError
    from appliance.quality import standardize as make_standard

    vision = open_vision(ctx)
    engine = _open_engine(ctx, vision, capture_standard, standards_dir)
    pixels = _load_or_exit(image)
    faces = vision.analyzer.analyze(pixels, landmarks=True, iris=True)
    if not faces:
        fail(f"{image}: no face found", EXIT_INPUT)
    try:
        result = make_standard(pixels, faces[0], engine.profile.geometry)
    except StandardizeError as exc:
        fail(f"{image}: cannot standardize for {engine.profile.name}: {exc}", EXIT_INPUT)
    try:
        write_file_atomic(output, result.jpeg)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_INPUT)
    out = {"image": str(image), "output": str(output), "profile": engine.profile.name, "sap": engine.profile.sap,
           **result.to_json()}
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"{output}: {result.width}x{result.height} ({engine.profile.name}), eye line at "
                   f"{100 * result.eye_line_from_bottom:.1f}% of the height from the bottom, head width about "
                   f"{100 * result.head_width_ratio:.0f}% of the width, {result.ied:.1f} px between the eyes "
                   f"(scale {result.scale:.3f}, levelled {result.rotation:+.1f} deg)")


def _load_or_exit(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except ImageError as exc:
        fail(str(exc), EXIT_INPUT)
    raise AssertionError("unreachable")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--aligned", is_flag=True, help="IMAGE is already an aligned 150x150 face chip")
@click.option("--json", "as_json", is_flag=True, help="print {model, dim, template} as JSON")
@click.pass_context
def embed(ctx: click.Context, image: Path, aligned: bool, as_json: bool) -> None:
    """Compute the face template of the largest face in IMAGE."""
    vision = open_vision(ctx)
    pixels = _load_or_exit(image)
    try:
        template = vision.template(pixels, aligned=aligned)
    except ValueError as exc:
        fail(f"{image}: {exc}", EXIT_INPUT)
    if template is None:
        fail(f"{image}: no face found", EXIT_INPUT)
    out = {"model": vision.bundle.embedding, "dim": int(template.size),
           "template": [round(float(v), 7) for v in template]}
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"{image}: {out['dim']}-D template from {out['model']}, norm {np.linalg.norm(template):.4f}")


@main.command()
@click.argument("image_a", type=click.Path(path_type=Path))
@click.argument("image_b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print {similarity, distance, same_person, threshold}")
@click.pass_context
def compare(ctx: click.Context, image_a: Path, image_b: Path, as_json: bool) -> None:
    """Compare the largest faces of two images (Euclidean distance against the bundle's threshold)."""
    vision = open_vision(ctx)
    templates = []
    for path in (image_a, image_b):
        template = vision.template(_load_or_exit(path))
        if template is None:
            fail(f"{path}: no face found", EXIT_INPUT)
        templates.append(template)
    result = vision.embedder.compare(*templates)
    out = {"similarity": round(result.similarity, 6), "distance": round(result.distance, 6),
           "same_person": result.same_person, "threshold": result.threshold}
    if as_json:
        click.echo(json.dumps(out))
    else:
        verdict = "same person" if result.same_person else "different people"
        click.echo(f"distance {out['distance']:.4f} (threshold {out['threshold']}): {verdict}")


@main.group()
def models() -> None:
    """Inspect and verify the model bundle."""


@models.command("verify")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), default=None,
              help="bundle folder (default: from config, else the installed bundle)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_verify(ctx: click.Context, bundle_dir: Path | None, as_json: bool) -> None:
    """Check every model file against the manifest's sha256 (the same check start-up makes)."""
    try:
        bundle = Bundle.load(bundle_dir or ctx.obj["config"].vision.bundle)
    except BundleError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": str(exc)}))
        fail(str(exc))
    entries = [{"name": m.name, "role": m.role, "file": m.file, "sha256": m.sha256,
                "source": f"{m.source_package} {m.source_version}", "licence": m.licence}
               for m in bundle.models.values()]
    if as_json:
        click.echo(json.dumps({"ok": True, "root": str(bundle.root), "embedding": bundle.embedding,
                               "match_threshold": bundle.match_threshold, "models": entries}))
        return
    click.echo(f"bundle {bundle.root}: all {len(entries)} files match the manifest")
    for e in entries:
        marker = "*" if e["name"] == bundle.embedding else " "
        click.echo(f" {marker} {e['role']:<18} {e['file']:<42} {e['source']}")
    click.echo(" * the embedding this station uses")


@main.command()
@click.option("--image", type=click.Path(path_type=Path), default=None,
              help="portrait to use (default: the astronaut photograph shipped with scikit-image)")
@click.pass_context
def demo(ctx: click.Context, image: Path | None) -> None:
    """Run the vision core on a sample portrait and print what it found."""
    from appliance.demo import run_demo

    vision = open_vision(ctx)
    sys.exit(run_demo(vision, image))


def _register_commands() -> None:
    """Commands that live beside the code they drive (one concept per module)."""
    from appliance.capture.cli import register as register_capture_commands
    from appliance.doctor_cli import doctor
    from appliance.store.cli import register as register_store_commands
    from appliance.ui.cli import register as register_ui_commands
    from firmware.provision_cli import provision
    from sync.station.cli import register as register_sync_commands

    register_store_commands(main)
    register_capture_commands(main)
    register_ui_commands(main)
    register_sync_commands(main)
    main.add_command(provision)
    main.add_command(doctor)


_register_commands()

if __name__ == "__main__":
    main()
