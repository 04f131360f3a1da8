"""Topic names and slugs."""

from __future__ import annotations

import pytest

from sync.protocol import topics


def test_builders_and_parser_agree() -> None:
    for kind in topics.KINDS:
        name = topics.topic("king", "st-01", kind)
        assert name == f"booking/v1/king/st-01/{kind}"
        assert topics.parse_topic(name) == topics.Topic("king", "st-01", kind)
        assert str(topics.parse_topic(name)) == name
    assert topics.records_topic("king", "st-01").endswith("/records")
    assert topics.acks_topic("king", "st-01").endswith("/acks")
    assert topics.status_topic("king", "st-01").endswith("/status")
    assert topics.commands_topic("king", "st-01").endswith("/commands")
    assert topics.gallery_subscription("king") == "$share/gallery/booking/v1/king/+/records"
    assert topics.checks_subscription("king") == "$share/gallery/booking/v1/king/+/checks"
    assert topics.gallery_audit_subscription("king", group="g2") == "$share/g2/booking/v1/king/+/audit"


@pytest.mark.parametrize("slug", ["a", "st-01", "king-county", "0", "a" * 63])
def test_valid_slugs(slug: str) -> None:
    assert topics.is_slug(slug)
    assert topics.check_slug(slug) == slug


@pytest.mark.parametrize(
    "slug", ["", "-a", "a-", "A", "st_01", "st/01", "+", "#", "$sys", "st 01", "a" * 64, "é", "st-01\n", 5, None]
)
def test_invalid_slugs(slug: object) -> None:
    assert not topics.is_slug(slug)
    with pytest.raises(topics.TopicError):
        topics.check_slug(slug)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        "booking/v1/king/st-01",
        "booking/v1/king/st-01/records/x",
        "booking/v2/king/st-01/records",
        "booking/v1/king/+/records",
        "booking/v1/King/st-01/records",
        "booking/v1/king/st-01/logs",
        "/booking/v1/king/st-01/records",
        "",
    ],
)
def test_parser_rejects(name: str) -> None:
    with pytest.raises(topics.TopicError):
        topics.parse_topic(name)


def test_builders_refuse_wildcards_and_unknown_kinds() -> None:
    with pytest.raises(topics.TopicError):
        topics.records_topic("king", "+")
    with pytest.raises(topics.TopicError):
        topics.topic("king", "st-01", "logs")  # type: ignore[arg-type]
    with pytest.raises(topics.TopicError):
        topics.gallery_subscription("king", group="a/b")
