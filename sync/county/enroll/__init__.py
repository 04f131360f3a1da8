"""County-side enrolment: the county CA, one-time enrolment tokens and the HTTPS enrolment server.

A new booking station proves it holds an enrolment token that county IT issued for its station id,
sends a certificate signing request for the TLS key it generated itself and the public half of its
Ed25519 record-signing key, and gets back its client certificate, the county CA certificate and the
county's command-verification key. Private keys never leave the device. The wire contract that both
sides share is :mod:`sync.protocol.enroll`; the device side is :mod:`firmware.provision`.
"""
