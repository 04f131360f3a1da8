"""Tests of sync.station."""
