"""``booking-gallery search`` and ``booking-gallery index status|rebuild|verify``.

Each command opens the gallery store (``--db``, as every gallery command) and the index the ``[search]``
table of county.toml names (``--engine`` and ``--index-dir`` override it). A search first brings the index
up to date with the store in memory (the FAISS file belongs to the running worker and is not written), so
a record stored a moment ago is found. Exit codes: 0 done, 1 a check failed (verify found differences) or
the index cannot be used, 2 a bad probe, record or template file (one line).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from sync.county.config import current_config
from sync.county.gallery.cli import _store, db_option
from sync.county.gallery.store import GalleryStore
from sync.county.search.engine import SearchEngineError
from sync.county.search.index import POSE, SearchIndex, SearchResult, open_index
from sync.county.search.settings import ENGINES, SearchConfigError

F = TypeVar("F", bound=Callable[..., Any])


class InputError(click.ClickException):
    """A probe, record or template the search cannot use: one line, exit status 2."""

    exit_code = 2


def engine_options(func: F) -> F:
    func = click.option("--index-dir", "index_dir", default=None, envvar="BOOKING_GALLERY_INDEX_DIR",
                        type=click.Path(file_okay=False, path_type=Path),
                        help="FAISS index folder (default: [search] folder, else search/ beside the gallery).")(func)
    return click.option("--engine", default=None, envvar="BOOKING_GALLERY_SEARCH_ENGINE", type=click.Choice(ENGINES),
                        help="Search engine (default: [search] engine of county.toml, else faiss).")(func)


@contextmanager
def _index(db_url: str, engine: str | None, index_dir: Path | None, *, read_only: bool,
           create: bool = False) -> Iterator[tuple[GalleryStore, SearchIndex]]:
    try:
        settings = current_config().search.with_overrides(engine=engine, folder=index_dir)
    except SearchConfigError as exc:
        raise click.ClickException(str(exc)) from None
    with _store(db_url, create=create) as store:
        try:
            index = open_index(settings, db_url, read_only=read_only)
        except (SearchEngineError, SearchConfigError) as exc:
            raise click.ClickException(str(exc)) from None
        try:
            yield store, index
        except SearchEngineError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            index.close()


def _record_template(store: GalleryStore, record_id: str) -> np.ndarray:
    if store.get_record(record_id) is None:
        raise InputError(f"no record {record_id!r} is stored in this gallery")
    for t in store.templates(record_id):
        if t.pose == POSE and t.dim == 128:
            return np.frombuffer(t.vector, dtype="<f4").astype(np.float32)
    raise InputError(f"record {record_id} has no frontal template to search with")


def _probe(probe: Path | None, record_id: str | None, template_file: Path | None, bundle_dir: Path | None
           ) -> tuple[dict[str, Any], np.ndarray | None]:
    """The probe's description and template (None for --record: read from the store once it is open)."""
    given = [x for x in (probe, record_id, template_file) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of PROBE.jpg, --record RECORD_ID or --template FILE")
    from sync.county.search.probe import ProbeError, Prober, ProbeSetupError, read_template

    try:
        if template_file is not None:
            return {"template": str(template_file)}, read_template(template_file)
        if probe is not None:
            start = time.perf_counter()
            try:
                prober = Prober(bundle_dir)
            except ProbeSetupError as exc:
                raise click.ClickException(f"cannot compute probe templates: {exc}") from None
            vector = prober.template(probe)
            return {"image": str(probe), "model": prober.model,
                    "embed_ms": round((time.perf_counter() - start) * 1000, 1)}, vector
    except ProbeError as exc:
        raise InputError(str(exc)) from None
    return {"record_id": record_id}, None


def _print(result: SearchResult, probe: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"probe": probe, "candidates": [c.to_json() for c in result.candidates],
                               "searched": result.searched, "took_ms": round(result.took_ms, 3)}))
        return
    if not result.candidates:
        click.echo(f"No candidates ({result.searched} templates searched in {result.took_ms:.1f} ms).")
        return
    click.echo(f"{'#':>3}  {'distance':>8}  {'booking':16}  {'ORI':10}  {'station':14}  "
               f"{'captured (UTC)':16}  record id")
    for rank, c in enumerate(result.candidates, 1):
        click.echo(f"{rank:>3}  {c.distance:8.4f}  {c.booking_number:16}  {c.ori:10}  {c.station:14}  "
                   f"{c.captured_at:%Y-%m-%d %H:%M}  {c.record_id}")
    click.echo(f"{len(result.candidates)} candidate(s); {result.searched} templates searched in "
               f"{result.took_ms:.1f} ms. Candidates are leads for an examiner, not identifications.")


@click.command("search")
@click.argument("probe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--record", "record_id", default=None, help="Search with a stored record's frontal template "
              "(the record itself is left out of the candidates).")
@click.option("--template", "template_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Search with a raw template: 128 little-endian float32 values (512 bytes).")
@click.option("--top", "top", default=10, show_default=True, type=click.IntRange(1, 1000), help="At most K candidates.")
@click.option("--threshold", default=None, type=click.FloatRange(0, None),
              help="Only candidates at or below this Euclidean distance (dlib: same person below about 0.6).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: probe, candidates, searched, took_ms.")
@click.option("--bundle", "bundle_dir", default=None, envvar="BOOKING_MODEL_BUNDLE",
              type=click.Path(file_okay=False, path_type=Path),
              help="Model bundle folder (default: the installed bundle, the one the stations run).")
@db_option()
@engine_options
def search_cmd(probe: Path | None, record_id: str | None, template_file: Path | None, top: int,
               threshold: float | None, as_json: bool, bundle_dir: Path | None, db_url: str, engine: str | None,
               index_dir: Path | None) -> None:
    """Find the stored bookings whose frontal face is nearest to PROBE.jpg (or a record, or a template)."""
    described, vector = _probe(probe, record_id, template_file, bundle_dir)
    with _index(db_url, engine, index_dir, read_only=True) as (store, index):
        if vector is None:
            assert record_id is not None
            vector = _record_template(store, record_id)
        index.catch_up(store)
        result = index.search(store, vector, k=top, threshold=threshold, exclude_record=record_id)
    _print(result, described, as_json)


@click.group("index")
def index_group() -> None:
    """The search index: derived from the gallery store, rebuilt and checked against it."""


@index_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@db_option()
@engine_options
def index_status(as_json: bool, db_url: str, engine: str | None, index_dir: Path | None) -> None:
    """Engine, size, and how far the saved index is behind the store."""
    with _index(db_url, engine, index_dir, read_only=True) as (store, index):
        info = index.status(store)
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(", ".join(f"{key} {value}" for key, value in info.items()))


@index_group.command("rebuild")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@db_option()
@engine_options
def index_rebuild(as_json: bool, db_url: str, engine: str | None, index_dir: Path | None) -> None:
    """Build the index again from every frontal template in the store (stop the gallery worker first:
    a running worker keeps its own copy in memory and saves it over the rebuilt file)."""
    start = time.perf_counter()
    with _index(db_url, engine, index_dir, read_only=False) as (store, index):
        count = index.rebuild(store)
        info = index.status(store)
    took = time.perf_counter() - start
    if as_json:
        click.echo(json.dumps({**info, "indexed": count, "took_s": round(took, 3)}))
    else:
        click.echo(f"Rebuilt the {info['engine']} index: {count} frontal templates in {took:.1f} s.")


@index_group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@db_option()
@engine_options
def index_verify(as_json: bool, db_url: str, engine: str | None, index_dir: Path | None) -> None:
    """Check that every stored frontal template is in the index and nothing else is (exit 1 if not).

    The index as saved is checked, not caught up first: a worker saves every [search] save_interval
    seconds, so templates stored since then are listed as missing until it does."""
    with _index(db_url, engine, index_dir, read_only=True) as (store, index):
        report = index.verify(store)
    if as_json:
        click.echo(json.dumps(report.to_json()))
    elif report.ok:
        click.echo(f"OK: the index holds exactly the {report.stored} stored frontal templates.")
    else:
        click.echo(f"Index differs from the store: {len(report.missing)} stored template(s) missing "
                   f"{report.missing[:10]}, {len(report.extra)} not in the store {report.extra[:10]}. "
                   "Fix: booking-gallery index rebuild.")
    if not report.ok:
        raise SystemExit(1)
