from __future__ import annotations

import pytest

from flowdeck.errors import PasswordRejected
from flowdeck.security import tokens
from flowdeck.security.passwords import Hasher, check_policy
from tests.helpers import STRONG


@pytest.mark.parametrize(
    ("password", "rule", "message"),
    [
        ("short", "min_length", "at least 12 characters"),
        ("x" * 129, "max_length", "at most 128 characters"),
        ("password1234", "common_password", "commonly used passwords"),
        ("my name is alice, ok?", "contains_username", "must not contain the username"),
    ],
)
def test_each_policy_rule_says_which_rule_failed(password: str, rule: str, message: str) -> None:
    with pytest.raises(PasswordRejected, match=message) as caught:
        check_policy(password, "Alice")
    assert caught.value.details["rule"] == rule


WEAK = [
    "aaaaaaaaaaaa",
    " " * 12,
    "123456789012",
    "abcdefghijkl",
    "qwertyuiopasdf",
    "iloveyou1234",
    "123123123123",
    "x" * 128,
]


@pytest.mark.parametrize("password", WEAK)
def test_easily_guessed_passwords_are_refused_saying_why(password: str) -> None:
    with pytest.raises(PasswordRejected, match="too easy to guess") as caught:
        check_policy(password, "alice")
    details = caught.value.details
    assert details["rule"] == "too_guessable" and details["min_score"] == 3
    assert details["score"] < 3 and details["warning"] + " ".join(details["suggestions"])
    assert details["warning"] in caught.value.message  # zxcvbn's feedback, in the message


def test_the_username_and_other_context_count_as_guessable() -> None:
    check_policy("zorblaxquintrell", "someone")
    with pytest.raises(PasswordRejected) as caught:  # e.g. an email address, word by word
        check_policy("zorblaxquintrell", "someone", "zorblax.quintrell@example.org")
    assert caught.value.details["rule"] == "too_guessable"


@pytest.mark.parametrize("username", ["alice", "root", "bench", "bob", "admin", "wendy"])
def test_the_test_passphrase_is_strong_enough(username: str) -> None:
    check_policy(STRONG, username)


def test_no_composition_rules() -> None:
    check_policy("just lowercase words here", "alice")  # no digits or symbols needed
    check_policy("ünïcödé pässwörd gëts ïn", "alice")
    check_policy("tuna " * 3 + "q8Zr!vT2m#Lp9wXe" * 7, "alice")  # past zxcvbn's 72 characters


@pytest.fixture(scope="module")
def hasher() -> Hasher:
    return Hasher(time_cost=2, memory_kib=19456, parallelism=1)


def test_argon2id_with_owasp_parameters(hasher: Hasher) -> None:
    h = hasher.hash("correct horse battery")
    assert h.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hasher.verify(h, "correct horse battery")
    assert not hasher.verify(h, "correct horse batterY")
    assert not hasher.verify("not a hash", "x")


def test_unknown_user_verification_burns_time_and_fails(hasher: Hasher) -> None:
    assert hasher.verify(None, "flowdeck-timing-equaliser") is False


def test_rehash_needed_when_parameters_change(hasher: Hasher) -> None:
    old = hasher.hash("correct horse battery")
    stronger = Hasher(time_cost=3, memory_kib=19456, parallelism=1)
    assert stronger.needs_rehash(old)
    assert not hasher.needs_rehash(old)


def test_tokens_have_256_random_bits_and_are_stored_hashed() -> None:
    a, b = tokens.new_token(), tokens.new_token()
    assert a != b and a.startswith("fdk_") and len(a) >= 4 + 43
    assert tokens.hash_token(a) != a and len(tokens.hash_token(a)) == 64
    assert tokens.same_hash(tokens.hash_token(a), tokens.hash_token(a))
    assert not tokens.same_hash(tokens.hash_token(a), tokens.hash_token(b))
