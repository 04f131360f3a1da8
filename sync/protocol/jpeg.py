"""JPEG headers read from the markers, without decoding a pixel: one parser for the station's records
(:mod:`sync.protocol.wire` checks each capture's size against its JPEG) and the county's exports
(:mod:`sync.county.gallery.nist` fills and checks the Type-10 fields from it)."""

from __future__ import annotations

from dataclasses import dataclass

_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOF_NAMES = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive", 0xC3: "lossless"}


@dataclass(frozen=True)
class JpegInfo:
    """What the Type-10 fields must agree with, read from the JPEG markers (no pixel decoding)."""

    width: int
    height: int
    sof: int
    precision: int
    components: int
    jfif: bool
    complete: bool  # ends with an EOI marker

    @property
    def process(self) -> str:
        return _SOF_NAMES.get(self.sof, f"SOF{self.sof - 0xC0}")

    @property
    def baseline(self) -> bool:
        return self.sof == 0xC0 and self.precision == 8


def jpeg_info(data: bytes) -> JpegInfo | None:
    """Frame header, JFIF marker and EOI of a JPEG, or None when the bytes are not one or end before a
    complete frame header (the first SOF segment)."""
    if len(data) < 4 or data[:3] != b"\xff\xd8\xff":
        return None
    i, n, jfif = 2, len(data), False
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # stand-alone markers
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker == 0xE0 and data[i + 4 : i + 9] == b"JFIF\x00":
            jfif = True
        if marker in _SOF_MARKERS:
            if i + 10 > n or length < 8:
                return None
            return JpegInfo(
                width=int.from_bytes(data[i + 7 : i + 9], "big"),
                height=int.from_bytes(data[i + 5 : i + 7], "big"),
                sof=marker,
                precision=data[i + 4],
                components=data[i + 9],
                jfif=jfif,
                complete=data.rstrip(b"\x00")[-2:] == b"\xff\xd9",
            )
        if marker in (0xDA, 0xD9):  # start of scan or end of image before any frame header
            return None
        i += 2 + length
    return None


def jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first SOF segment of a JPEG, or None if the bytes are no JPEG
    or end before a frame header. Reads markers only; never decodes pixels."""
    info = jpeg_info(data)
    return None if info is None else (info.width, info.height)
