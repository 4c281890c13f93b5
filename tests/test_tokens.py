"""Signed link tokens."""

from __future__ import annotations

import pytest

from newsletter.errors import InvalidInput
from subscribers.tokens import TokenSigner


def test_round_trip_and_binding_to_purpose():
    signer = TokenSigner("k" * 32)
    token = signer.make(12, 3, "unsubscribe")
    claims = signer.verify(token, "unsubscribe")
    assert (claims.subscriber_id, claims.list_id, claims.purpose) == (12, 3, "unsubscribe")
    with pytest.raises(InvalidInput, match="not valid"):
        signer.verify(token, "preferences")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("v1.12.", "v1.13."),  # another subscriber
        lambda t: t.replace(".3.", ".4.", 1),  # another list
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # forged signature
        lambda t: t + "x",
        lambda t: t[:-1] + "é",  # a non-ASCII signature is refused, not a crash (hmac.compare_digest)
        lambda t: "garbage",
        lambda t: "",
    ],
)
def test_tampered_tokens_are_refused(mutate):
    signer = TokenSigner("k" * 32)
    with pytest.raises(InvalidInput):
        signer.verify(mutate(signer.make(12, 3, "unsubscribe")), "unsubscribe")


def test_key_rotation_old_keys_still_verify_new_tokens_use_the_new_key():
    old = TokenSigner("old-key-" * 4)
    token = old.make(1, 1, "preferences")
    rotated = TokenSigner("new-key-" * 4, old_keys=["old-key-" * 4])
    assert rotated.verify(token, "preferences").subscriber_id == 1
    with pytest.raises(InvalidInput):
        TokenSigner("new-key-" * 4).verify(token, "preferences")
    with pytest.raises(InvalidInput):
        old.verify(rotated.make(1, 1, "preferences"), "preferences")


def test_expiry():
    signer = TokenSigner("k" * 32)
    token = signer.make(1, 1, "confirm", issued_at=1_000_000)
    with pytest.raises(InvalidInput, match="expired"):
        signer.verify(token, "confirm", max_age=7 * 86400)
    assert signer.verify(signer.make(1, 1, "confirm"), "confirm", max_age=60).list_id == 1


def test_archive_keys_open_one_issue_of_one_list_and_survive_a_rotation():
    signer = TokenSigner("k" * 32)
    key = signer.archive_key(3, 12)
    assert key == signer.archive_key(3, 12)  # the same for every reader: it tracks no one
    assert signer.check_archive_key(3, 12, key)
    for list_id, issue_id, other in ((3, 13, key), (4, 12, key), (3, 12, key[:-1] + "A"), (3, 12, "é"), (3, 12, "")):
        assert not signer.check_archive_key(list_id, issue_id, other)
    assert not signer.check_archive_key(3, 12, signer.make(3, 12, "unsubscribe"))
    rotated = TokenSigner("n" * 32, old_keys=["k" * 32])
    assert rotated.check_archive_key(3, 12, key) and rotated.archive_key(3, 12) != key
