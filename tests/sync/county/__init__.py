"""Tests of sync.county."""
