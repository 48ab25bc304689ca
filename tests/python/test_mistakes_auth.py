"""Realistic mistakes with ApiKeys and AuditLog, and the messages they get.

Each row: what a newcomer wrote, the exception they must get, and words the message must
contain (naming the argument or value at fault, never a key).
"""

from __future__ import annotations

import pytest

import keel


@pytest.fixture
def env(tmp_path):
    keyring = keel.Keyring.generate()
    audit = keel.AuditLog(tmp_path / "keel.db", keyring)
    keys = keel.ApiKeys(tmp_path / "keel.db", keyring, audit=audit)
    return {"tmp": tmp_path, "keyring": keyring, "keys": keys, "audit": audit}


def _test_key(e):
    return e["keys"].create("acme", "ci", env="test")[0]


def _reader(e):
    return e["keys"].verify(e["keys"].create("acme", "r", scopes=["chat:read"])[0])


MISTAKES = [
    # (id, call, exception, words in the message)
    (
        "scopes as one str",
        lambda e: e["keys"].create("acme", "k", scopes="chat:write"),
        TypeError,
        ["scopes", "list of strings"],
    ),
    (
        "scopes with a non-str",
        lambda e: e["keys"].create("acme", "k", scopes=["chat:write", 7]),
        TypeError,
        ["scopes", "list of strings"],
    ),
    (
        "scope with a space",
        lambda e: e["keys"].create("acme", "k", scopes=["chat write"]),
        keel.InvalidArgument,
        ["scope", "spaces"],
    ),
    (
        "upper-case env",
        lambda e: e["keys"].create("acme", "k", env="PROD"),
        keel.InvalidArgument,
        ["environment", "lowercase"],
    ),
    ("empty tenant", lambda e: e["keys"].create("", "k"), keel.InvalidArgument, ["tenant"]),
    (
        "metadata not JSON",
        lambda e: e["keys"].create("acme", "k", metadata="{owner: ops}"),
        keel.InvalidArgument,
        ["metadata", "JSON"],
    ),
    (
        "negative expiry",
        lambda e: e["keys"].create("acme", "k", expires_at_ms=-1),
        keel.InvalidArgument,
        ["expires_at_ms", "-1"],
    ),
    (
        "negative grace",
        lambda e: e["keys"].rotate("acme", 1, grace=-5.0),
        keel.InvalidArgument,
        ["grace"],
    ),
    (
        "zero cache_ttl",
        lambda e: keel.ApiKeys(e["tmp"] / "keel.db", e["keyring"], cache_ttl=0),
        keel.InvalidArgument,
        ["cache_ttl"],
    ),
    (
        "accepted_envs as one str",
        lambda e: keel.ApiKeys(e["tmp"] / "keel.db", e["keyring"], accepted_envs="test"),
        TypeError,
        ["accepted_envs", "list of strings"],
    ),
    (
        "accepted_envs empty",
        lambda e: keel.ApiKeys(e["tmp"] / "keel.db", e["keyring"], accepted_envs=[]),
        keel.InvalidArgument,
        ["accepted_envs", "at least one"],
    ),
    (
        "accepted_envs upper-case",
        lambda e: keel.ApiKeys(e["tmp"] / "keel.db", e["keyring"], accepted_envs=["Live"]),
        keel.InvalidArgument,
        ["accepted_envs", '"Live"'],
    ),
    (
        "audit log in another file",
        lambda e: keel.ApiKeys(
            e["tmp"] / "keel.db", e["keyring"], audit=keel.AuditLog(e["tmp"] / "a.db", e["keyring"])
        ),
        keel.InvalidArgument,
        ["audit log", "keel.db"],
    ),
    (
        "test key in a live app",
        lambda e: e["keys"].verify(_test_key(e)),
        keel.AuthError,
        ["environment", '"test"', "live"],
    ),
    (
        "header instead of key",
        lambda e: e["keys"].verify("Bearer abc"),
        keel.AuthError,
        ["malformed"],
    ),
    ("key is None", lambda e: e["keys"].verify(None), TypeError, ["key"]),
    (
        "revoke a key of another tenant",
        lambda e: e["keys"].revoke("globex", e["keys"].create("acme", "k")[1].key_id),
        keel.AuthError,
        ["unknown"],
    ),
    (
        "missing scope",
        lambda e: _reader(e).require("chat:write"),
        keel.MissingScope,
        ["chat:write"],
    ),
    (
        "audit actor with a newline",
        lambda e: e["audit"].append("alice\nbob", "login"),
        keel.InvalidArgument,
        ["actor", "control"],
    ),
    (
        "audit target too long",
        lambda e: e["audit"].append("alice", "login", target="x" * 2000),
        keel.InvalidArgument,
        ["target", "1024"],
    ),
    (
        "negative audit limit",
        lambda e: e["audit"].query(limit=-1),
        keel.InvalidArgument,
        ["limit", "-1"],
    ),
    (
        "audit since as text",
        lambda e: e["audit"].query(since_ms="yesterday"),
        TypeError,
        ["since_ms"],
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "words"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_mistake_gets_a_clear_message(env, call, exc, words):
    with pytest.raises(exc) as err:
        call(env)
    message = str(err.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
