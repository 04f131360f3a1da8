"""county.toml (one configuration for every booking-gallery command) and reading commands that create nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sync.county import config as county_config
from sync.county.cli import main
from sync.county.config import CountyConfigError, load_county_config
from sync.county.gallery.store import GalleryDatabaseMissingError, SQLiteStore, open_store


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BOOKING_GALLERY_DB", raising=False)
    monkeypatch.delenv("BOOKING_GALLERY_CONFIG", raising=False)
    monkeypatch.delenv("BOOKING_CA_DIR", raising=False)
    monkeypatch.setattr(county_config, "DEFAULT_CONFIG", tmp_path / "no-such-etc" / "county.toml")


def _gallery(path: Path) -> Path:
    SQLiteStore(path).close()
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_county_toml_supplies_the_database(tmp_path: Path) -> None:
    db = _gallery(tmp_path / "g.db")
    cfg = _write(tmp_path / "county.toml", f'[gallery]\ndb = "{db}"\n')
    r = CliRunner().invoke(main, ["--config", str(cfg), "records"])
    assert r.exit_code == 0, r.output
    assert "No records stored." in r.output


def test_environment_names_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = _gallery(tmp_path / "g.db")
    cfg = _write(tmp_path / "county.toml", f'[gallery]\ndb = "{db}"\n')
    monkeypatch.setenv("BOOKING_GALLERY_CONFIG", str(cfg))
    r = CliRunner().invoke(main, ["devices", "list"])
    assert r.exit_code == 0 and "No stations registered." in r.output


def test_db_flag_and_environment_win_over_county_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _write(tmp_path / "county.toml", f'[gallery]\ndb = "{tmp_path / "missing" / "g.db"}"\n')
    db = _gallery(tmp_path / "g.db")
    r = CliRunner().invoke(main, ["--config", str(cfg), "records", "--db", str(db)])
    assert r.exit_code == 0 and "No records stored." in r.output
    monkeypatch.setenv("BOOKING_GALLERY_DB", str(db))
    r = CliRunner().invoke(main, ["--config", str(cfg), "records"])
    assert r.exit_code == 0 and "No records stored." in r.output
    assert not (tmp_path / "missing").exists()


def test_unknown_key_or_section_names_file_and_key(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "county.toml", '[gallery]\ndatabase = "x.db"\n')
    r = CliRunner().invoke(main, ["--config", str(cfg), "records"])
    assert r.exit_code == 2
    assert f"{cfg}: unknown key(s) in [gallery]: database" in r.output
    cfg = _write(tmp_path / "county.toml", '[galery]\ndb = "x.db"\n')
    with pytest.raises(CountyConfigError, match=r"unknown section \[galery\]"):
        load_county_config(cfg)


def test_missing_config_file_is_an_error_but_missing_default_is_not(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    r = CliRunner().invoke(main, ["--config", str(missing), "records"])
    assert r.exit_code == 2 and f"config file not found: {missing}" in r.output
    assert "Traceback" not in r.output
    assert load_county_config(None) == county_config.CountyConfig()


def test_county_toml_sections_are_read(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "county.toml", '[gallery]\ncounty = "king"\ndb = "postgresql://g@db/gallery"\n'
                 '[broker]\nhost = "mqtt.example"\nport = 8883\n[ca]\ndir = "ca"\n[export]\nfolder = "eft"\n')
    loaded = load_county_config(cfg)
    assert loaded.db == "postgresql://g@db/gallery"
    assert loaded.ca_dir == tmp_path.resolve() / "ca"
    assert loaded.export.folder == tmp_path.resolve() / "eft"
    # The receiver's example file is a valid county.toml: one format, not two.
    example = Path(county_config.__file__).parent / "gallery" / "receiver.example.toml"
    assert load_county_config(example).db == "/var/lib/booking-gallery/gallery.db"


def test_reading_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "nonexistent" / "dir" / "g.db"
    for args in (["records"], ["devices", "list"], ["export", "0190a000-0000-7000-8000-000000000000", "-o",
                                                    str(tmp_path / "x.eft")]):
        r = CliRunner().invoke(main, [*args, "--db", str(db)])
        assert r.exit_code == 2, (args, r.output)
        assert f"the gallery database {db} does not exist" in r.output
        assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "nonexistent").exists()
    with pytest.raises(GalleryDatabaseMissingError):
        open_store(db, create=False)
    assert not (tmp_path / "nonexistent").exists()


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all\n" * 200)
    r = CliRunner().invoke(main, ["records", "--db", str(garbage)])
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert f"{garbage} is not a gallery database: file is not a database" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_writing_commands_still_create_the_database(tmp_path: Path) -> None:
    db = tmp_path / "new" / "g.db"
    open_store(db).close()
    assert db.is_file()


def test_ca_dir_comes_from_county_toml(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "county.toml", '[ca]\ndir = "county-ca"\n')
    r = CliRunner().invoke(main, ["--config", str(cfg), "ca", "init", "--county", "king"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "county-ca").is_dir()
    r = CliRunner().invoke(main, ["--config", str(cfg), "tokens", "list"])
    assert r.exit_code == 0, r.output
    crl = tmp_path / "crl.pem"
    r = CliRunner().invoke(main, ["--config", str(cfg), "devices", "crl", "--empty", "-o", str(crl)])
    assert r.exit_code == 0 and crl.is_file(), r.output
    r = CliRunner().invoke(main, ["devices", "crl", "--empty", "-o", str(tmp_path / "crl2.pem")])
    assert r.exit_code == 2 and "[ca] dir in county.toml" in r.output
