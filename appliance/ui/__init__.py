"""The officer UI: a local web server for the booking desk's touchscreen.

Modules, one concern each:

* `settings` - the `[ui]` config section and command-line overrides
* `accounts` - officer accounts in ``DATA_DIR/accounts.db``: PIN (scrypt) + TOTP, the lockout rule
* `auth`     - sign-in, web sessions, the idle lock; every step audited in the store's audit log
* `desk`     - the one open booking: capture session, booking-number check, JMS requests, review words
* `drafts`   - the open booking's accepted captures, encrypted on disk, so a restart loses nothing
* `preview`  - the latest camera frame as a JPEG for the live preview
* `health`   - the queue screen's data and alarms (offline, queue growing, disk low)
* `server`   - the FastAPI app assembled from the parts below, and uvicorn with systemd's notify protocol
* `context`  - what the handlers share, built once at start-up
* `guards`   - the CSRF check, the security headers, the session and JMS-token dependencies
* `errors`   - how refusals and unexpected errors are answered
* `routes/`  - the JSON API (see ``API.md``), one router per part of the page
* `commands` - `booking-station serve` and `booking-station users ...`
* `static/`  - the page: plain HTML, CSS and JavaScript, no build step
"""
