"""Search fixtures: real templates of the labelled faces (computed once), a private PostgreSQL with pgvector,
and galleries of signed records built from those templates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from sync.county.gallery.store import GalleryStore, PostgresStore, SQLiteStore
from sync.county.search.index import SearchIndex
from sync.county.search.settings import SearchSettings
from sync.protocol import wire
from tests.conftest import read_labels, shared_data_dir
from tests.sync import factory

KEY = factory.key(1)
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
MODEL = "dlib_resnet_v1_float32"


@dataclasses.dataclass(frozen=True)
class Face:
    file: str
    identity: str
    path: Path
    vector: np.ndarray


@pytest.fixture(scope="session")
def prober():
    from sync.county.search.probe import Prober

    return Prober()


@pytest.fixture(scope="session")
def labelled_faces(shared_data: Path, prober) -> list[Face]:
    """Every labelled single-person photo with its template, computed once per session with the bundle."""
    faces = [Face(r["file"], r["identity"], r["path"], prober.template(r["path"]))
             for r in read_labels(shared_data_dir(), "single")]
    assert len(faces) >= 40
    return faces


def signed_record(vector: np.ndarray, n: int, *, station: str = "st-01", pose: str = "frontal",
                  model: str = MODEL) -> tuple[wire.VerifiedRecord, bytes]:
    """A signed record whose ``pose`` capture carries ``vector`` (plus a left profile without one)."""
    tpl = wire.WireTemplate(model=model, dim=128, values=np.asarray(vector, dtype="<f4").tobytes())
    first = dataclasses.replace(factory.capture("frontal"), template=tpl if pose == "frontal" else None)
    captures = [first, factory.capture("left_profile")]
    if pose == "smt":
        captures.append(dataclasses.replace(factory.capture("smt"), template=tpl))
    rec = factory.record(station=station, booking=wire.WireBooking(
        ori="WA0170000", booking_number=f"2026-{n:06d}", operator="ofc-1187",
        captured_at=factory.T0 + dt.timedelta(minutes=n)), captures=tuple(captures))
    payload = wire.encode_record(rec, KEY)
    return wire.verify_record(payload, lambda kid: KEY.public_key()), payload


def enrol(store: GalleryStore, vector: np.ndarray, n: int, **kwargs: object) -> str:
    verified, payload = signed_record(vector, n, **kwargs)  # type: ignore[arg-type]
    assert store.insert_record(verified, payload) == "stored"
    return verified.record.record_id


@pytest.fixture(params=["faiss+sqlite", "pgvector+postgresql"])
def gallery(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., tuple[GalleryStore, SearchIndex]]]:
    """``gallery(**settings)``: an empty store with the device registered, and an index over it: FAISS over
    SQLite, or pgvector in the same private PostgreSQL as a PostgreSQL gallery store."""
    from sync.county.search.index import open_index

    opened: list[tuple[GalleryStore, SearchIndex]] = []
    schema = f"g_{uuid.uuid4().hex[:10]}"
    if request.param.startswith("faiss"):
        db_url = str(tmp_path / "gallery.db")
    else:
        pg = request.getfixturevalue("pg_uri")
        db_url = pg + ("&" if "?" in pg else "?") + f"schema={schema}"

    def make(**changes: object) -> tuple[GalleryStore, SearchIndex]:
        if request.param.startswith("faiss"):
            store: GalleryStore = SQLiteStore(db_url)
            settings = SearchSettings(engine="faiss", folder=tmp_path / "search", **changes)  # type: ignore[arg-type]
        else:
            store = PostgresStore(request.getfixturevalue("pg_uri"), schema=schema)
            settings = SearchSettings(engine="pgvector", schema=f"s_{schema}", **changes)  # type: ignore[arg-type]
        if store.get_device("st-01") is None:
            store.register_device("st-01", "king", RAW)
        index = open_index(settings, db_url)
        opened.append((store, index))
        return store, index

    make.db_url = db_url  # type: ignore[attr-defined]
    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for store, index in opened:
        if isinstance(store, PostgresStore):
            try:
                index.engine.drop()  # type: ignore[attr-defined]
                store.drop_schema()
            except Exception:  # noqa: BLE001 - already dropped by an earlier opener
                pass
        index.close()
        store.close()
