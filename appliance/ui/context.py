"""What the officer UI's handlers share (:class:`Context`), built once at start-up, and the dependency that
hands it to a handler (``app.state.ctx``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from appliance.capture.session import CaptureStation
from appliance.store import Store
from appliance.store.crypto import BlobCipher, load_key
from appliance.store.db import data_paths
from appliance.ui.accounts import AccountStore
from appliance.ui.auth import Authenticator
from appliance.ui.desk import BookingDesk
from appliance.ui.drafts import DraftStore
from appliance.ui.preview import PreviewHub
from appliance.ui.settings import UISettings
from sync.station.checks import CheckSpool


@dataclass
class Context:
    """What the handlers share: settings, the sign-in machinery, the desk, and how to open the store."""

    settings: UISettings
    auth: Authenticator
    desk: BookingDesk
    open_store: Callable[[], Store]


def build_context(settings: UISettings, config: Any) -> Context:
    """Open the store (creating its key on first use), load the models and the station: everything that
    can fail at start-up fails here, before the server listens."""
    data_dir = settings.data_dir
    hub = PreviewHub()
    overrides: dict[str, Any] = {"camera_factory": hub.factory()}
    if settings.camera:
        overrides["camera_spec"] = settings.camera
    station = CaptureStation.from_config(config, data_dir=data_dir, station_id=settings.station_id,
                                         profile=settings.profile, profile_dir=settings.profile_dir, **overrides)
    open_store = station.store_opener  # the station's [store] settings (floor, queue limit) everywhere
    with open_store():
        pass  # creates the database and the key on a fresh data directory; refuses a wrong key
    cipher = BlobCipher(load_key(data_paths(data_dir)[1]))

    def open_accounts() -> AccountStore:
        return AccountStore.open_data_dir(data_dir, cipher)

    with open_accounts():
        pass  # creates accounts.db (0600) now rather than at the first sign-in
    auth = Authenticator(open_accounts, open_store, idle_seconds=settings.idle_seconds)
    desk = BookingDesk(station, open_store, DraftStore(data_dir, cipher), hub, auth.audit,
                       checks=CheckSpool(data_dir))
    return Context(settings, auth, desk, open_store)


async def context(request: Request) -> Context:
    """The application's `Context` (a dependency: ``ctx: Context = Depends(context)``)."""
    return request.app.state.ctx
