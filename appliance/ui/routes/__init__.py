"""The officer UI's routes, one `APIRouter` per part of the page (`appliance.ui.server.create_app`
includes them in this order; ``API.md`` documents the JSON API):

* `page`    - the page itself and ``/api/v1/health``
* `session` - sign-in, who is signed in, sign-out
* `booking` - opening a booking (officer or JMS), the capture steps, saving, the images
* `queue`   - the queue screen's data
* `admin`   - the station admin's Officers screen (enrolment with an authenticator QR code)
"""

from __future__ import annotations

from appliance.ui.routes import admin, booking, page, queue, session

ROUTERS = (page.router, session.router, booking.router, queue.router, admin.router)
