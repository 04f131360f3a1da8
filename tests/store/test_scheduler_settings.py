"""Housekeeping settings: the station file's [store], with the county's remote changes applied over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.config import StationConfig
from appliance.scheduler import settings_from_config
from sync.station.remote import SETTINGS_FILE, state_dir


def test_file_values_then_remote_changes(tmp_path: Path) -> None:
    config = StationConfig()
    config.store.delivered_image_days = 14
    config.store.floor_bytes = 1234
    settings = settings_from_config(config, tmp_path)
    assert (settings.delivered_image_days, settings.audit_keep_days, settings.floor_bytes) == (14.0, 400, 1234)

    folder = state_dir(tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SETTINGS_FILE).write_text(json.dumps({"settings": {"delivered_image_days": 3, "audit_keep_days": 730,
                                                                 "unknown_key": 1}}))
    settings = settings_from_config(config, tmp_path)
    assert (settings.delivered_image_days, settings.audit_keep_days) == (3.0, 730)
    assert settings.data_dir == tmp_path


def test_a_file_below_the_cjis_minimum_is_refused(tmp_path: Path) -> None:
    config = StationConfig()
    config.store.audit_keep_days = 30
    with pytest.raises(ValueError, match="365"):
        settings_from_config(config, tmp_path)
