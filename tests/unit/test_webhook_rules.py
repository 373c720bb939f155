"""Webhook rules without I/O: address checks, patterns, Retry-After, signatures."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from flowdeck.domain.events import matches
from flowdeck.domain.webhooks import Subscription, new_secret
from flowdeck.errors import UrlRefused
from flowdeck.runtime.webhooks import retry_after, signature
from flowdeck.security import ssrf

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd12::1", "unique-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_internal_addresses_are_refused(address: str, why: str) -> None:
    refusal = ssrf.refusal(ipaddress.ip_address(address))
    assert refusal is not None and why in refusal


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_pass(address: str) -> None:
    assert ssrf.refusal(ipaddress.ip_address(address)) is None


def test_the_allowlist_opens_chosen_networks_only() -> None:
    allow = ssrf.networks(["127.0.0.1/32", "10.20.0.0/16"])
    assert ssrf.refusal(ipaddress.ip_address("127.0.0.1"), allow) is None
    assert ssrf.refusal(ipaddress.ip_address("::ffff:10.20.3.4"), allow) is None
    assert ssrf.refusal(ipaddress.ip_address("127.0.0.2"), allow) is not None
    assert ssrf.refusal(ipaddress.ip_address("10.21.0.1"), allow) is not None


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "017700000001", "127.1", "0x7f.1", "[::ffff:7f00:1]"]
)
def test_numeric_host_forms_are_recognised(host: str) -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        ssrf.check_at_creation(f"http://{host}/x", [])


@pytest.mark.parametrize(
    "host", ["127.0.0.1.", "LOCALHOST.", "localhost.", "a.localhost.", "127.1.", "[::1]."]
)
def test_a_trailing_dot_does_not_hide_an_internal_host(host: str) -> None:
    with pytest.raises(UrlRefused) as caught:
        ssrf.check_at_creation(f"http://{host}/x", [])
    assert caught.value.code == "url_refused" and "loopback" in caught.value.message


def test_a_fully_qualified_name_is_the_same_host() -> None:
    assert ssrf.parse("https://Hooks.Example.org./a").host == "hooks.example.org"
    for url in ("http://example.org../", "http://./"):
        with pytest.raises(UrlRefused, match="not a valid name"):
            ssrf.parse(url)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://x/", "http:///nohost", "http://u:p@example.org/"]
)
def test_only_plain_http_urls(url: str) -> None:
    with pytest.raises(UrlRefused):
        ssrf.parse(url)


def test_the_checked_address_is_what_is_connected_to() -> None:
    target = ssrf.parse("https://hooks.example.org:8443/a/b?c=1#frag")
    assert target.host_header == "hooks.example.org:8443"
    assert target.url_for("93.184.215.14") == "https://93.184.215.14:8443/a/b?c=1"
    assert target.url_for("2606:2800::1") == "https://[2606:2800::1]:8443/a/b?c=1"
    assert ssrf.parse("http://example.org").host_header == "example.org"
    with pytest.raises(UrlRefused, match=r"10\.0\.0\.1"):
        ssrf.check_addresses(target, ["93.184.215.14", "10.0.0.1"], [])  # every address


@pytest.mark.parametrize(
    ("patterns", "event_type", "hit"),
    [
        (["*"], "step.failed", True),
        (["run.*"], "run.succeeded", True),
        (["run.*"], "step.failed", False),
        (["step.failed"], "step.failed", True),
        (["step.failed"], "step.failed_more", False),
        (["*.failed", "run.queued"], "step.failed", True),
    ],
)
def test_patterns(patterns: list[str], event_type: str, hit: bool) -> None:
    assert matches(patterns, event_type) is hit


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("120", NOW) == 120
    assert retry_after("Sun, 01 Mar 2026 12:02:00 GMT", NOW) == 120
    assert retry_after("soon", NOW) is None and retry_after(None, NOW) is None


def test_signatures_verify_with_the_standard_webhooks_library() -> None:
    now = datetime.now(UTC)
    old, new = new_secret(), new_secret()
    until = now + timedelta(hours=1)
    sub = Subscription("wh_1", "u", "https://x.org/", ["*"], None, True, new, now, now,
                       previous_secret=old, previous_secret_until=until)  # fmt: skip
    body = '{"type":"run.queued"}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature(sub, "msg_1", now, body),
    }
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"type": "run.queued"}
    assert len(new_secret().removeprefix("whsec_")) == 44  # base64 of 32 bytes
