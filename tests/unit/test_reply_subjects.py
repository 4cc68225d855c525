"""The reply-subject rule: what a worker publishes outcomes to, and what it refuses."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from coordshard_client.subjects import DEFAULT_REPLY_PREFIX, MAX_REPLY_BYTES, reply_problem


def test_the_sdks_reply_subjects_are_accepted_by_the_default_prefix() -> None:
    # CoordinateClient replies to f"{nc.new_inbox()}.{token}".
    assert reply_problem(f"{Client().new_inbox()}.17") is None
    assert DEFAULT_REPLY_PREFIX == "_INBOX"


def test_the_length_bound_is_exact() -> None:
    head = "_INBOX.x."
    assert reply_problem(head + "r" * (MAX_REPLY_BYTES - len(head))) is None
    assert reply_problem(head + "r" * (MAX_REPLY_BYTES - len(head) + 1)) is not None


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        pytest.param("_INBOX.abc." + "r" * 5000, "5011 bytes long", id="long"),
        pytest.param("_INBOX.abc.a b", "not a NATS subject", id="space"),
        pytest.param("_INBOX.abc.a\tb", "not a NATS subject", id="tab"),
        pytest.param("_INBOX.abc.a\x00", "not a NATS subject", id="nul"),
        pytest.param("_INBOX.abc..x", "not a NATS subject", id="empty-token"),
        pytest.param("_INBOX.abc.", "not a NATS subject", id="trailing-dot"),
        pytest.param("_INBOX.>", "not a NATS subject", id="full-wildcard"),
        pytest.param("_INBOX.a*", "not a NATS subject", id="star"),
        pytest.param("_INBOX.\u00e9", "not a NATS subject", id="non-ascii"),
        pytest.param("_INBOX.\udcff", "not a NATS subject", id="undecodable"),
        pytest.param("_INBOX", "not under _INBOX.>", id="prefix-alone"),
        pytest.param("_INBOXES.x", "not under _INBOX.>", id="longer-token"),
        pytest.param("coordinate.cmd.3.sys.get-point", "not under", id="command-subject"),
        pytest.param("$JS.API.STREAM.DELETE.X", "not under", id="js-api"),
    ],
)
def test_refused_reply_subjects_say_why(subject: str, why: str) -> None:
    problem = reply_problem(subject)
    assert problem is not None and why in problem


def test_a_custom_prefix_is_a_whole_token_prefix() -> None:
    assert reply_problem("_INBOX.gw1.abc.1", prefix="_INBOX.gw1") is None
    assert reply_problem("_INBOX.gw10.abc.1", prefix="_INBOX.gw1") is not None
    assert reply_problem("_INBOX.abc.1", prefix="_INBOX.gw1") is not None
