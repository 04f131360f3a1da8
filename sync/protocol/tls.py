"""Client TLS for the county broker, the same on both sides: the station's sync agent and the county's
gallery worker and operator commands each connect with their own certificate from the county CA."""

from __future__ import annotations

import ssl


def tls_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """Client TLS: verify the broker against the county CA (with host name), present our
    certificate, refuse anything older than TLS 1.2 (CJIS)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx
