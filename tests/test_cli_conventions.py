"""One command-line convention for `booking-station` and `booking-gallery`, checked over every command.

The commands are found by walking the click groups, so a command added later is checked without being
listed here: its ``--help`` works, it has ``--json`` unless it is a long-running service, its flags use
the one name each thing has on both CLIs, and an unknown flag is a usage error (exit 2). A handful of
cheap commands are run for real with ``--json`` and must print exactly one JSON object on stdout.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.cli import main as station_cli
from sync.county.cli import main as gallery_cli

ROOTS: dict[str, click.Group] = {"booking-station": station_cli, "booking-gallery": gallery_cli}

#: Long-running services (and the station's demo, which prints a picture-by-picture walk-through): no --json.
SERVICES = {
    ("booking-station", "serve"),
    ("booking-station", "sync"),
    ("booking-station", "demo"),
    ("booking-gallery", "serve"),
    ("booking-gallery", "receive"),
    ("booking-gallery", "enroll-server"),
}

#: Commands whose --json is a stream, one JSON object per line as things happen (documented in README).
STREAMS = {("booking-station", "analyze"), ("booking-station", "capture")}


#: The one flag each thing has, by the option's destination name in the code.
CANONICAL = {
    "as_json": "--json",
    "camera": "--camera",
    "camera_source": "--camera",
    "ca_dir": "--ca-dir",
    "db_url": "--db",
    "gallery_db": "--db",
    "data_dir": "--data-dir",
    "config_path": "--config",
    "bundle_dir": "--bundle",
    "capture_standard": "--capture-standard",
    "standards_dir": "--standards-dir",
    "device_profile": "--device-profile",
    "crl_file": "--crlfile",
    "crlfile": "--crlfile",
    "station": "--station",
    "station_id": "--station",
    "agency": "--agency",
    "agency_ori": "--agency",
    "out": "--output",  # a file the command writes: -o/--output FILE
    "output": "--output",
    "out_dir": "--out",  # a folder it writes into: --out DIR
}

#: Old names still accepted for one release: never shown in --help.
RETIRED = {"--camera-source", "--dir", "--gallery-db", "--models", "--crl-file", "--profile", "--profile-dir"}
#: (`--out` is retired only as `devices crl`'s file; it stays the name of a folder a command writes into.)


def _walk(group: click.Group, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = [(path, command) for root, group in ROOTS.items() for path, command in _walk(group, (root,))]
IDS = [" ".join(path) for path, _ in COMMANDS]


def _visible_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


@pytest.fixture(autouse=True)
def _no_outside_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No environment variable of the machine running the tests leaks into the commands."""
    for name in ("BOOKING_GALLERY_CONFIG", "BOOKING_CA_DIR", "BOOKING_GALLERY_DB", "BOOKING_ENROLL_GALLERY_DB",
                 "BOOKING_STATION_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "county.toml"
    empty.write_text("")
    monkeypatch.setenv("BOOKING_GALLERY_CONFIG", str(empty))


def test_both_clis_have_their_commands() -> None:
    # The walk found the commands the README lists (a broken registration would silently shrink it).
    found = set(IDS)
    for expected in ("booking-station users unlock", "booking-station doctor", "booking-gallery ca init",
                     "booking-gallery devices rotate", "booking-gallery export", "booking-gallery tokens list"):
        assert expected in found


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_works(path: tuple[str, ...], command: click.Command) -> None:
    result = CliRunner().invoke(ROOTS[path[0]], [*path[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    shown = set(result.stdout.replace(",", " ").replace("/", " ").split())
    assert not shown & RETIRED, f"{' '.join(path)} --help shows retired flags {shown & RETIRED}"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_command_that_prints_a_result_has_json(path: tuple[str, ...], command: click.Command) -> None:
    has_json = any("--json" in o.opts for o in _visible_options(command))
    assert has_json == (path not in SERVICES), " ".join(path)


@pytest.mark.parametrize("path", sorted(STREAMS), ids=" ".join)
def test_streams_say_so_in_their_help(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    [json_flag] = [o for o in _visible_options(command) if "--json" in o.opts]
    assert "per line" in (json_flag.help or ""), json_flag.help


def test_one_flag_name_per_thing_on_both_clis() -> None:
    names: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    wrong: list[str] = []
    for path, command in COMMANDS:
        for option in _visible_options(command):
            assert option.name is not None
            longs = tuple(sorted(o for o in option.opts if o.startswith("--")))
            names[option.name].add(longs)
            canonical = CANONICAL.get(option.name)
            if canonical is not None and canonical not in option.opts:
                wrong.append(f"{' '.join(path)}: {'/'.join(option.opts)} should be {canonical}")
            if RETIRED & set(option.opts):
                wrong.append(f"{' '.join(path)}: {'/'.join(option.opts)} shows a retired name")
    assert not wrong, wrong
    # The same destination in the code is spelled the same way on every command of both CLIs.
    differing = {dest: spellings for dest, spellings in names.items() if len(spellings) > 1}
    assert not differing, differing


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_an_unknown_flag_is_a_usage_error(path: tuple[str, ...], command: click.Command) -> None:
    result = CliRunner().invoke(ROOTS[path[0]], [*path[1:], "--no-such-flag"])
    assert result.exit_code == 2, result.output
    assert "No such option" in result.stderr and result.stdout == ""


# --- cheap commands run for real ---------------------------------------------------------------------------


def _one_json_object(result: Result) -> dict[str, Any]:
    """Exactly one JSON document on stdout, and it is an object."""
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # raises on a second document or a stray line
    assert isinstance(document, dict), result.stdout
    return document


def _gallery(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(gallery_cli, list(args), input=stdin)


def _station(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(station_cli, list(args), input=stdin)


def test_county_commands_print_one_json_object(tmp_path: Path) -> None:
    ca, db = tmp_path / "ca", str(tmp_path / "gallery.db")
    doc = _one_json_object(_gallery("ca", "init", "--ca-dir", str(ca), "--county", "king-county", "--json"))
    assert doc["county"] == "king-county" and Path(doc["ca_certificate"]).is_file()
    doc = _one_json_object(_gallery("ca", "server-cert", "--ca-dir", str(ca), "--name", "localhost",
                                    "--out-cert", str(tmp_path / "s.crt"), "--out-key", str(tmp_path / "s.key"),
                                    "--json"))
    assert doc["names"] == ["localhost"] and Path(doc["certificate"]).is_file() and doc["serial"]
    doc = _one_json_object(_gallery("ca", "client-cert", "--ca-dir", str(ca), "--name", "gallery.king-county",
                                    "--out-cert", str(tmp_path / "c.crt"), "--out-key", str(tmp_path / "c.key"),
                                    "--json"))
    assert doc["name"] == "gallery.king-county" and Path(doc["key"]).is_file()
    issued = _one_json_object(_gallery("tokens", "issue", "--ca-dir", str(ca), "--station", "desk-1", "--json"))
    doc = _one_json_object(_gallery("tokens", "list", "--ca-dir", str(ca), "--json"))
    assert [(t["token_id"], t["state"]) for t in doc["tokens"]] == [(issued["token_id"], "open")]
    doc = _one_json_object(_gallery("devices", "crl", "--empty", "--ca-dir", str(ca), "-o",
                                    str(tmp_path / "crl.pem"), "--json"))
    assert doc["serials"] == [] and Path(doc["crl"]).is_file()
    doc = _one_json_object(_gallery("broker-config", "--county", "king-county", "--out", str(tmp_path / "broker"),
                                    "--cafile", "ca.crt", "--certfile", "b.crt", "--keyfile", "b.key", "--json"))
    assert Path(doc["conf"]).is_file() and doc["gallery_identities"] == ["gallery.king-county"]

    key = tmp_path / "desk-1.pub"
    key.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    doc = _one_json_object(_gallery("devices", "register", "--station", "desk-1", "--county", "king-county",
                                    "--public-key", str(key), "--db", db, "--json"))
    assert doc["station"] == "desk-1" and doc["fingerprint"]
    doc = _one_json_object(_gallery("devices", "list", "--db", db, "--json"))
    assert [(d["station"], d["status"]) for d in doc["devices"]] == [("desk-1", "active")]
    doc = _one_json_object(_gallery("records", "--db", db, "--json"))
    assert doc == {"records": [], "shown": 0, "total": 0}
    doc = _one_json_object(_gallery("devices", "revoke", "--station", "desk-1", "--db", db, "--json"))
    assert doc["station"] == "desk-1" and doc["revoked_at"] and doc["broker_done"] is False

    fleet = _gallery("fleet", "--db", db, "--json")  # exit 1: a station that never reported is a failed check
    assert isinstance(json.loads(fleet.stdout), dict), fleet.stdout


def test_station_commands_print_one_json_object(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    doc = _one_json_object(_station("models", "verify", "--json"))
    assert doc["ok"] is True and doc["models"]
    added = _one_json_object(_station("users", "add", "o.chen", "--pin-stdin", "--json", "--data-dir", str(data),
                                      stdin="24681357\n"))
    assert added["officer_id"] == "o.chen"
    doc = _one_json_object(_station("users", "unlock", "o.chen", "--json", "--data-dir", str(data)))
    assert doc == {"officer_id": "o.chen", "unlocked": True}
    doc = _one_json_object(_station("users", "list", "--json", "--data-dir", str(data)))
    assert [(u["officer_id"], u["locked"]) for u in doc["users"]] == [("o.chen", False)]


def test_an_error_with_json_is_one_line_on_stderr_and_nothing_on_stdout(tmp_path: Path) -> None:
    # No CA there: input error, exit 2; a script reading stdout finds nothing half-written.
    result = _gallery("tokens", "list", "--ca-dir", str(tmp_path / "nothing"), "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    # A reading command never creates a database: the same one line, from a click exception inside the command.
    result = _gallery("devices", "list", "--db", str(tmp_path / "missing.db"), "--json")
    assert result.exit_code == 2 and result.stdout == "" and not (tmp_path / "missing.db").exists()
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    result = _station("users", "unlock", "nobody", "--json", "--data-dir", str(tmp_path))
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.startswith("error: ")


def test_station_input_errors_exit_2_and_failed_checks_exit_1(tmp_path: Path) -> None:
    """The README's table: what the caller gave is wrong (an unknown officer, a refused booking field) is exit
    2, the same as a usage error; a check that ran and failed (not delivering) is exit 1."""
    data = tmp_path / "data"
    data.mkdir()
    added = _station("users", "add", "o.chen", "--pin-stdin", "--json", "--data-dir", str(data), stdin="24681357\n")
    assert added.exit_code == 0, added.output
    for command in (("users", "unlock", "nobody"), ("users", "reset-totp", "nobody"),
                    ("purge", "--booking", "C-1\x07", "--yes")):
        result = _station(*command, "--data-dir", str(data))
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, command
    assert "nobody" in _station("users", "unlock", "nobody", "--data-dir", str(data)).stderr
    # a failed check on the same station: its sync agent is not delivering
    status = _station("status", "--json", "--data-dir", str(data))
    assert status.exit_code == 1 and json.loads(status.stdout)["delivering"] is False


def test_old_flag_names_still_work_with_a_warning(tmp_path: Path) -> None:
    result = _gallery("ca", "init", "--dir", str(tmp_path / "ca"), "--county", "king-county", "--json")
    assert _one_json_object(result)["ca_dir"] == str(tmp_path / "ca")
    assert "--dir is the old name of --ca-dir" in result.stderr
    result = _gallery("tokens", "list", "--dir", str(tmp_path / "ca"), "--ca-dir", str(tmp_path / "other"))
    assert result.exit_code == 2 and "give different values" in result.stderr
    result = _gallery("devices", "crl", "--empty", "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path / "c.pem"))
    assert result.exit_code == 0 and (tmp_path / "c.pem").is_file(), result.output
    assert "--out is the old name of --output" in result.stderr
    assert "--out " not in _gallery("devices", "crl", "--help").stdout
