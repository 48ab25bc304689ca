"""keel.fastapi.client_ip: which address is the client behind trusted proxies."""

from __future__ import annotations

import pytest

from keel.fastapi import client_ip, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])
PROXY = "10.1.2.3"


def scope(peer: str, *headers: tuple[str, str]) -> dict:
    return {
        "type": "http",
        "client": (peer, 1234),
        "headers": [(k.encode(), v.encode("latin-1")) for k, v in headers],
    }


XFF = "x-forwarded-for"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # The classic single line, read from the right, skipping trusted hops.
        ([(XFF, "6.6.6.6, 203.0.113.7, 10.0.0.5")], "203.0.113.7"),
        # A proxy that appends its own line (HAProxy option forwardfor): the client wrote the
        # first line, the proxy the last one. All lines count, in order.
        ([(XFF, "6.6.6.6"), (XFF, "203.0.113.7")], "203.0.113.7"),
        ([(XFF, "6.6.6.6, 7.7.7.7"), (XFF, "203.0.113.7, 10.0.0.5")], "203.0.113.7"),
        # ip:port, bracketed and quoted forms.
        ([(XFF, "6.6.6.6, 203.0.113.7:4711")], "203.0.113.7"),
        ([(XFF, "[2001:db8::1]:80")], "2001:db8::1"),
        ([(XFF, "[2001:db8::1]")], "2001:db8::1"),
        ([(XFF, '"[2001:db8::1]:80"')], "2001:db8::1"),
        ([(XFF, "2001:db8::1")], "2001:db8::1"),
        # An IPv4-mapped hop is the IPv4 client.
        ([(XFF, "::ffff:203.0.113.7")], "203.0.113.7"),
        # A trusted IPv6 hop is skipped like an IPv4 one.
        ([(XFF, "203.0.113.7, [2001:db8:ffff::9]:443")], "203.0.113.7"),
        # Every hop trusted: the leftmost address of the chain, never the proxy (peer).
        ([(XFF, "10.0.0.7, 10.0.0.5")], "10.0.0.7"),
        ([(XFF, "10.0.0.7"), (XFF, "10.0.0.5")], "10.0.0.7"),
        # A malformed hop stops the walk at the last trusted address before it.
        ([(XFF, "garbage, 10.0.0.5")], "10.0.0.5"),
        ([(XFF, "203.0.113.7, nonsense")], PROXY),
        ([(XFF, "203.0.113.7:notaport")], PROXY),
        ([(XFF, "[203.0.113.7]")], PROXY),
        ([(XFF, "[2001:db8::1")], PROXY),
        # No header: the trusted proxy itself is the client.
        ([], PROXY),
        # The Forwarded header is ignored unless the proxy is configured to write it.
        ([("forwarded", "for=203.0.113.9")], PROXY),
    ],
)
def test_x_forwarded_for_from_a_trusted_peer(headers, expected):
    assert client_ip(scope(PROXY, *headers), TRUSTED) == expected


FWD = "forwarded"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(FWD, "for=192.0.2.60;proto=http;by=203.0.113.43")], "192.0.2.60"),
        ([(FWD, 'for=6.6.6.6, For="[2001:db8:cafe::17]:4711"')], "2001:db8:cafe::17"),
        ([(FWD, "for=6.6.6.6"), (FWD, "for=192.0.2.60, for=10.0.0.5;proto=https")], "192.0.2.60"),
        ([(FWD, 'for="192.0.2.60:8080";by=10.0.0.5')], "192.0.2.60"),
        # A quoted comma or semicolon does not split elements.
        ([(FWD, 'for=192.0.2.60;ext="a,b;c=d", for=10.0.0.5')], "192.0.2.60"),
        # unknown / obfuscated / missing for= stop the walk at the last trusted address.
        ([(FWD, "for=unknown, for=10.0.0.5")], "10.0.0.5"),
        ([(FWD, "for=_hidden")], PROXY),
        ([(FWD, "proto=https")], PROXY),
        ([(FWD, "for=1.1.1.1;for=2.2.2.2")], PROXY),
        # All trusted: leftmost.
        ([(FWD, "for=10.9.9.9, for=10.0.0.5")], "10.9.9.9"),
        # X-Forwarded-For is ignored when the proxy writes Forwarded.
        ([(XFF, "203.0.113.7")], PROXY),
    ],
)
def test_forwarded_header_from_a_trusted_peer(headers, expected):
    assert client_ip(scope(PROXY, *headers), TRUSTED, forwarded_header="forwarded") == expected


def test_an_untrusted_peer_cannot_choose_its_address():
    forged = scope("198.51.100.1", (XFF, "203.0.113.7"), (FWD, "for=203.0.113.7"))
    assert client_ip(forged, TRUSTED) == "198.51.100.1"
    assert client_ip(forged, TRUSTED, forwarded_header="forwarded") == "198.51.100.1"
    assert client_ip(forged) == "198.51.100.1"


def test_ipv4_mapped_peers_match_ipv4_ranges():
    mapped = scope("::ffff:10.1.2.3", (XFF, "203.0.113.7"))
    assert client_ip(mapped, TRUSTED) == "203.0.113.7"
    # An untrusted mapped peer is reported as IPv4.
    assert client_ip(scope("::ffff:198.51.100.1"), TRUSTED) == "198.51.100.1"
    # A mapped range in the configuration matches plain IPv4 peers.
    assert client_ip(
        scope(PROXY, (XFF, "203.0.113.7")), parse_networks(["::ffff:10.0.0.0/104"])
    ) == ("203.0.113.7")


def test_non_ip_peers_and_bad_settings():
    assert client_ip(scope("testclient", (XFF, "203.0.113.7")), TRUSTED) == "testclient"
    assert client_ip({"type": "http", "headers": []}, TRUSTED) == "unknown"
    with pytest.raises(ValueError, match="forwarded_header"):
        client_ip(scope(PROXY), TRUSTED, forwarded_header="x-real-ip")
    with pytest.raises(ValueError):
        parse_networks(["not-a-network"])
