"""Booking sessions: live analysis, auto-capture, manual capture with overrides, saving a booking."""
