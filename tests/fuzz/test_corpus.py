"""Replays the fuzz seed corpus (``tests/fuzz/corpus/<target>/``) through the same targets ``make fuzz`` runs,
so an input that once crashed a decoder or loader stays fixed. Fast: a few dozen small files."""

from __future__ import annotations

import pytest

from tests.fuzz.targets import TARGETS, corpus_files, quiet_logging


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_seed_corpus_replays_without_a_crash(target: str) -> None:
    files = corpus_files(target)
    assert files, f"no seed corpus for {target} (python -m tests.fuzz.seeds writes it)"
    quiet_logging()
    try:
        for path in files:
            TARGETS[target](path.read_bytes())  # anything but a documented error type fails the test
    finally:
        import logging

        logging.disable(logging.NOTSET)


def test_the_targets_let_only_documented_errors_through() -> None:
    """A target must not swallow everything: an input that makes the code raise an unexpected type escapes."""
    from unittest import mock

    with mock.patch("sync.protocol.wire.verify_record", side_effect=KeyError("boom")), \
            pytest.raises(KeyError):
        TARGETS["wire"](b"\x00anything")
    with mock.patch("appliance.config.build_config", side_effect=TypeError("boom")), pytest.raises(TypeError):
        TARGETS["config"](b"\x00[station]\n")
