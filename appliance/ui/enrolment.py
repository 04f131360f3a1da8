"""The authenticator enrolment picture: the ``otpauth://`` URI as a QR code, for the screen (SVG, made on
the station: no image library, no third-party service sees the secret) and for a terminal (text blocks).

An officer enrols by pointing the authenticator app at the code once; typing a 32-character secret on a
phone is where enrolments go wrong.
"""

from __future__ import annotations

import io

import qrcode
import qrcode.image.svg
from qrcode.constants import ERROR_CORRECT_M


def _code(uri: str, border: int) -> qrcode.QRCode:
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=border)
    code.add_data(uri)
    code.make(fit=True)
    return code


def qr_svg(uri: str) -> str:
    """An SVG document of the QR code (a single path; it scales to any size on the page)."""
    image = _code(uri, border=4).make_image(image_factory=qrcode.image.svg.SvgPathImage)
    return image.to_string(encoding="unicode")


def qr_text(uri: str) -> str:
    """The QR code in half-block characters for a terminal with a dark background (light quiet zone)."""
    out = io.StringIO()
    _code(uri, border=2).print_ascii(out=out, invert=True)
    return out.getvalue()
