"""Settings of the officer UI: the `[ui]` section of the station config, then command-line overrides.

`UIConfig` (in `appliance.config`) is the `[ui]` section of the station config. Everything has a default
that is right for a booking desk; the limits that the CJIS Security Policy sets (idle lock at most 30
minutes; 5 failures lock an account for 10 minutes) are checked here or fixed in `appliance.ui.accounts`,
so a config file can make them stricter but never weaker.

    [ui]
    host = "127.0.0.1"          # the kiosk browser runs on the device; bind wider only behind TLS
    port = 8080
    idle_lock_minutes = 30      # at most 30
    agency_ori = ""             # default agency on the start form (e.g. "VA0290000")
    jms_token_file = ""         # file holding the jail management system's API token ("" = no JMS access)
    allowed_hosts = []          # extra Host names accepted (DNS-rebinding guard); localhost always is
    cookie_secure = false       # true when served over https (behind a TLS terminator)
    offline_after_minutes = 15
    queue_alarm_pending = 25
    queue_alarm_age_minutes = 60
    max_body_bytes = 65536      # larger request bodies are answered 413 before they are read (4 KiB - 1 MiB)
"""

from __future__ import annotations

import hmac
import os
import stat
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from appliance.config import UI_MAX_BODY_BYTES, UIConfig
from appliance.config_section import describe
from appliance.ui.auth import MAX_IDLE_SECONDS
from appliance.ui.health import HealthSettings

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class SettingsError(ValueError):
    """A UI setting is unusable; the message names it."""


@dataclass
class UISettings:
    """Everything the server needs, resolved from config and flags."""

    data_dir: Path
    station_id: str
    agency_ori: str = ""
    county: str = ""  # [station] county: named in the authenticator entry of officers enrolled here
    host: str = "127.0.0.1"
    port: int = 8080
    idle_seconds: float = float(MAX_IDLE_SECONDS)
    camera: str | None = None  # camera spec overriding [camera] source
    profile: str | None = None
    profile_dir: Path | None = None
    jms_token: str | None = None
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS
    cookie_secure: bool = False
    health: HealthSettings = field(default_factory=HealthSettings)
    max_body_bytes: int = UI_MAX_BODY_BYTES

    @classmethod
    def build(cls, config: Any, *, data_dir: Path, station_id: str, **overrides: Any) -> UISettings:
        """From the station config's `[ui]` section (if it has one) and the command line's overrides
        (None means "not given")."""
        ui = _section(config)
        given = {k: v for k, v in overrides.items() if v is not None}
        idle_minutes = float(given.pop("idle_lock_minutes", ui.idle_lock_minutes))
        if not 0 < idle_minutes * 60 <= MAX_IDLE_SECONDS:
            raise SettingsError(f"idle_lock_minutes must be more than 0 and at most {MAX_IDLE_SECONDS // 60} "
                                f"(CJIS), got {idle_minutes:g}")
        token_file = given.pop("jms_token_file", None) or ui.jms_token_file
        host = given.pop("host", ui.host)
        hosts = {*LOCAL_HOSTS, *(str(h) for h in ui.allowed_hosts)}
        if host not in ("0.0.0.0", "::"):
            hosts.add(host)
        settings = cls(
            data_dir=Path(data_dir), station_id=station_id, agency_ori=given.pop("agency_ori", ui.agency_ori or ""),
            host=host, port=int(given.pop("port", ui.port)), idle_seconds=idle_minutes * 60,
            jms_token=read_token(Path(token_file)) if token_file else None, allowed_hosts=tuple(sorted(hosts)),
            cookie_secure=bool(ui.cookie_secure), max_body_bytes=int(ui.max_body_bytes),
            county=str(getattr(getattr(config, "station", None), "county", "") or ""),
            health=HealthSettings(offline_after=timedelta(minutes=ui.offline_after_minutes),
                                  queue_alarm_pending=int(ui.queue_alarm_pending),
                                  queue_alarm_age=timedelta(minutes=ui.queue_alarm_age_minutes)),
        )
        for key, value in given.items():
            if not hasattr(settings, key):
                raise SettingsError(f"unknown UI setting {key!r}")
            setattr(settings, key, value)
        return settings

    def jms_token_matches(self, presented: str) -> bool:
        return self.jms_token is not None and hmac.compare_digest(presented.encode(), self.jms_token.encode())


def _section(config: Any) -> UIConfig:
    """The config's `[ui]` section as a `UIConfig` (the station config's own, a dict of its keys, or absent)."""
    ui = getattr(config, "ui", None)
    if ui is None:
        return UIConfig()
    if isinstance(ui, UIConfig):
        return ui
    try:
        return UIConfig.model_validate(ui if isinstance(ui, dict) else dict(vars(ui)))
    except ValidationError as exc:  # an unknown key, a wrong type
        raise SettingsError(describe(exc, section="ui")) from None


def read_token(path: Path) -> str:
    """The JMS API token from its file: at least 32 characters, readable by the owner only."""
    try:
        st = os.stat(path)
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"JMS token file {path} cannot be read: {exc.strerror or exc}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise SettingsError(f"JMS token file {path} is readable by group or others; chmod 600 {path}")
    if len(text) < 32 or not text.isprintable() or " " in text:
        raise SettingsError(f"JMS token file {path} must hold one token of at least 32 characters")
    return text
