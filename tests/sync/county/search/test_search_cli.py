"""`booking-gallery search` and `booking-gallery index`: real photos, the installed bundle, a real SQLite gallery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sync.county.cli import main
from sync.county.gallery.store import SQLiteStore
from tests.sync import factory
from tests.sync.county.search.conftest import RAW, Face, enrol

HELD_OUT = "Jeff"


@pytest.fixture
def gallery_db(tmp_path: Path, labelled_faces: list[Face], monkeypatch: pytest.MonkeyPatch) -> dict:
    """One booking per identity (two for Angelina, none for Jeff); what the test needs to check the output."""
    monkeypatch.delenv("BOOKING_GALLERY_CONFIG", raising=False)
    monkeypatch.setenv("BOOKING_GALLERY_CONFIG", str(tmp_path / "county.toml"))
    db = tmp_path / "gallery.db"
    (tmp_path / "county.toml").write_text(f'[gallery]\ndb = "{db}"\n[search]\nengine = "faiss"\nfolder = "idx"\n')
    store = SQLiteStore(db)
    store.register_device("st-01", "king", RAW)
    booked: dict[str, list[tuple[str, str]]] = {}  # identity -> [(record id, booking number)]
    for n, face in enumerate(labelled_faces):
        if face.identity == HELD_OUT or len(booked.get(face.identity, [])) >= (2 if face.identity == "Angelina" else 1):
            continue
        booked.setdefault(face.identity, []).append((enrol(store, face.vector, n), f"2026-{n:06d}"))
    store.close()
    return {"db": db, "booked": booked, "total": sum(len(v) for v in booked.values()), "dir": tmp_path}


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _probe(faces: list[Face], identity: str, skip: int) -> Face:
    return [f for f in faces if f.identity == identity][skip]


def test_search_by_photo_prints_the_issue_json_shape(gallery_db: dict, labelled_faces: list[Face]) -> None:
    probe = _probe(labelled_faces, "Scarlett", 2)
    code, out, _ = _run("search", str(probe.path), "--json", "--top", "3")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"probe", "candidates", "searched", "took_ms"}
    assert doc["searched"] == gallery_db["total"] and doc["took_ms"] >= 0
    assert doc["probe"]["image"] == str(probe.path) and doc["probe"]["model"]
    assert len(doc["candidates"]) == 3
    first = doc["candidates"][0]
    assert set(first) == {"record_id", "booking_number", "ori", "station", "captured_at", "pose", "distance"}
    assert (first["record_id"], first["booking_number"]) == gallery_db["booked"]["Scarlett"][0]
    assert (first["ori"], first["station"], first["pose"]) == ("WA0170000", "st-01", "frontal")
    distances = [c["distance"] for c in doc["candidates"]]
    assert distances == sorted(distances) and distances[0] < 0.6
    code, out, _ = _run("search", str(probe.path), "--top", "2")
    assert code == 0 and gallery_db["booked"]["Scarlett"][0][1] in out and "2 candidate(s)" in out


def test_threshold_record_and_template_probes(gallery_db: dict, labelled_faces: list[Face]) -> None:
    unknown = _probe(labelled_faces, HELD_OUT, 0)
    code, out, _ = _run("search", str(unknown.path), "--threshold", "0.6", "--json")
    assert code == 0 and json.loads(out)["candidates"] == []
    (angelina_a, _), (angelina_b, _) = gallery_db["booked"]["Angelina"]
    code, out, _ = _run("search", "--record", angelina_a, "--json", "--threshold", "0.6")
    ids = [c["record_id"] for c in json.loads(out)["candidates"]]
    assert code == 0 and ids[0] == angelina_b and angelina_a not in ids
    probe = _probe(labelled_faces, "Mark", 1)
    raw = gallery_db["dir"] / "probe.tpl"
    raw.write_bytes(probe.vector.astype("<f4").tobytes())
    code, out, _ = _run("search", "--template", str(raw), "--json", "--top", "1")
    assert code == 0
    doc = json.loads(out)
    assert doc["probe"] == {"template": str(raw)}
    assert doc["candidates"][0]["record_id"] == gallery_db["booked"]["Mark"][0][0]


@pytest.mark.parametrize("case", ["missing", "not-an-image", "no-face", "two-faces", "short-template", "nan-template",
                                  "unknown-record", "no-probe", "two-probes"])
def test_bad_probes_are_one_line_and_exit_2(gallery_db: dict, faces_dir: Path, case: str) -> None:
    d = gallery_db["dir"]
    (d / "noise.jpg").write_bytes(factory.jpeg(320, 240, seed=3))
    (d / "text.jpg").write_text("not a photo")
    (d / "short.tpl").write_bytes(b"\x00" * 500)
    (d / "nan.tpl").write_bytes(b"\x00\x00\xc0\x7f" * 128)
    args, expect = {
        "missing": ([str(d / "nope.jpg")], "not found"),
        "not-an-image": ([str(d / "text.jpg")], "text.jpg"),
        "no-face": ([str(d / "noise.jpg")], "no face found"),
        "two-faces": ([str(faces_dir / "deepface" / "couple.jpg")], "2 faces found"),
        "short-template": (["--template", str(d / "short.tpl")], "500 bytes"),
        "nan-template": (["--template", str(d / "nan.tpl")], "not finite"),
        "unknown-record": (["--record", "01900000-0000-7000-8000-000000000000"], "no record"),
        "no-probe": ([], "exactly one of"),
        "two-probes": ([str(d / "noise.jpg"), "--record", "x"], "exactly one of"),
    }[case]
    code, out, err = _run("search", *args)
    assert code == 2, (out, err)
    assert expect in err
    if case not in ("no-probe", "two-probes"):  # usage errors also print the usage line
        assert len(err.strip().splitlines()) == 1
    assert out == ""


def test_index_status_verify_rebuild(gallery_db: dict, labelled_faces: list[Face]) -> None:
    code, out, _ = _run("index", "verify", "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"] and report["missing_count"] == gallery_db["total"]  # never built
    code, out, _ = _run("index", "rebuild", "--json")
    assert code == 0 and json.loads(out)["indexed"] == gallery_db["total"]
    assert (gallery_db["dir"] / "idx" / "faiss.index").is_file()  # [search] folder, relative to county.toml
    code, out, _ = _run("index", "verify")
    assert code == 0 and f"exactly the {gallery_db['total']} stored" in out
    store = SQLiteStore(gallery_db["db"])
    enrol(store, _probe(labelled_faces, HELD_OUT, 0).vector, 999)
    store.close()
    code, out, _ = _run("index", "status", "--json")
    status = json.loads(out)
    assert code == 0 and status["engine"] == "faiss" and status["count"] == gallery_db["total"]
    assert status["behind"] == 1
    code, out, _ = _run("index", "verify", "--json")
    assert code == 1 and json.loads(out)["missing_count"] == 1
    # a search catches up in memory (the new booking is found) but leaves the worker's file alone
    code, out, _ = _run("search", str(_probe(labelled_faces, HELD_OUT, 1).path), "--json", "--threshold", "0.6")
    assert code == 0 and json.loads(out)["candidates"][0]["booking_number"] == "2026-000999"
    assert _run("index", "verify")[0] == 1


def test_the_pgvector_engine_from_county_toml(gallery_db: dict, labelled_faces: list[Face], pg_uri: str) -> None:
    toml = gallery_db["dir"] / "county.toml"
    toml.write_text(f'[gallery]\ndb = "{gallery_db["db"]}"\n[search]\nengine = "pgvector"\nurl = "{pg_uri}"\n'
                    'schema = "cli_test"\n')
    code, out, _ = _run("index", "rebuild", "--json")
    assert code == 0 and json.loads(out)["engine"] == "pgvector" and json.loads(out)["indexed"] == gallery_db["total"]
    assert _run("index", "verify")[0] == 0
    code, out, _ = _run("search", str(_probe(labelled_faces, "Scarlett", 2).path), "--json", "--top", "1")
    assert code == 0 and json.loads(out)["candidates"][0]["record_id"] == gallery_db["booked"]["Scarlett"][0][0]
    code, out, _ = _run("index", "status", "--engine", "faiss", "--json")  # the flag wins over the file
    assert code == 0 and json.loads(out)["engine"] == "faiss"
    toml.write_text(f'[gallery]\ndb = "{gallery_db["db"]}"\n[search]\nengine = "pgvector"\n')
    code, _, err = _run("index", "status")
    assert code == 1 and "needs [search] url" in err
