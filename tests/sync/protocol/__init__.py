"""Tests of sync.protocol."""
