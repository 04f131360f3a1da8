"""Renamed flags: the new names are in --help, the old ones still work for one release (hidden, with a warning)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from appliance.cli import main
from appliance.cli_support import renamed_option

#: command -> (new flag, old flag) pairs it must show / hide.
RENAMED = {
    ("analyze",): [("--capture-standard", "--profile"), ("--standards-dir", "--profile-dir")],
    ("standardize",): [("--capture-standard", "--profile"), ("--standards-dir", "--profile-dir")],
    ("capture",): [("--capture-standard", "--profile"), ("--standards-dir", "--profile-dir")],
    ("serve",): [("--capture-standard", "--profile"), ("--standards-dir", "--profile-dir")],
    ("doctor",): [("--device-profile", "--profile")],
    ("provision",): [("--device-profile", "--profile")],
}


@pytest.mark.parametrize("command", list(RENAMED))
def test_new_names_are_in_help_and_old_ones_are_hidden(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    words = result.output.replace(",", " ").split()
    for new, old in RENAMED[command]:
        assert new in words, f"{new} missing from {' '.join(command)} --help"
        assert old not in words, f"{old} still shown in {' '.join(command)} --help"


@click.command()
@renamed_option("--capture-standard", "--profile", "capture_standard", required=True)
def _probe(capture_standard: str) -> None:
    click.echo(json.dumps({"capture_standard": capture_standard}))


@pytest.mark.parametrize(
    ("args", "value", "warned"),
    [
        (["--capture-standard", "icao"], "icao", False),
        (["--profile", "icao"], "icao", True),
        (["--profile", "icao", "--capture-standard", "icao"], "icao", True),
        (["--capture-standard", "icao", "--profile", "icao"], "icao", True),
    ],
)
def test_the_old_flag_gives_the_new_option_its_value(args: list[str], value: str, warned: bool) -> None:
    result = CliRunner().invoke(_probe, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"capture_standard": value}
    assert ("--profile is the old name of --capture-standard" in result.stderr) is warned


@pytest.mark.parametrize("args", [["--profile", "icao", "--capture-standard", "nist-sap30"],
                                  ["--capture-standard", "nist-sap30", "--profile", "icao"], []])
def test_conflicting_or_missing_values_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(_probe, args)
    assert result.exit_code == 2, result.output
    assert "--capture-standard" in result.output


def test_the_real_commands_take_the_old_flags(tmp_path: Path) -> None:
    """Parsing only (no models needed): each old flag reaches the command under its new name."""
    runner = CliRunner()
    image = tmp_path / "none.jpg"
    both = runner.invoke(main, ["standardize", str(image), "--profile", "icao", "--capture-standard", "nist-sap30",
                                "-o", str(tmp_path / "out.jpg")])
    assert both.exit_code == 2 and "different values" in both.output
    missing = runner.invoke(main, ["standardize", str(image), "-o", str(tmp_path / "out.jpg")])
    assert missing.exit_code == 2 and "--capture-standard" in missing.output

    unknown = runner.invoke(main, ["provision", "--county", "king", "--station", "desk-1", "--enroll-url",
                                   "https://enroll.example/enroll", "--ca-bundle", str(image),
                                   "--config-dir", str(tmp_path / "etc"), "--data-dir", str(tmp_path / "var"),
                                   "--profile", "no-such-board"])
    assert unknown.exit_code == 2 and "no-such-board" in unknown.output, unknown.output
    assert "--profile is the old name of --device-profile" in unknown.stderr
    assert not (tmp_path / "etc").exists(), "nothing written for a bad device profile"
