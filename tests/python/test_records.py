"""Records that an app returns from its routes (Hit, Document, Message, Identity, ApiKeyInfo,
AuditEntry) become plain JSON through ``to_dict()``, and all but Identity survive pickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

import keel

JSON_TYPES = (str, int, float, bool, type(None))


def assert_plain_json(value: object) -> None:
    """Only str/int/float/bool/None, lists and str-keyed dicts, all the way down."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), k
            assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain_json(v)
    else:
        assert isinstance(value, JSON_TYPES), (type(value), value)


def test_hit_to_dict_json_and_pickle() -> None:
    index = keel.BM25Index()
    index.add("a", "the lift of a wing", "Wings", metadata={"y": 1950, "tags": ["x"]})
    index.add("b", "heat transfer", "Heat")
    hit = keel.fuse({"bm25": index.search("wing")}, limit=1)[0]
    d = hit.to_dict()
    assert_plain_json(d)
    assert d["doc_id"] == "a" and d["title"] == "Wings" and d["chunk_id"] == 0
    assert d["metadata"] == {"y": 1950, "tags": ["x"]}
    assert d["text"] == "the lift of a wing"
    assert (d["char_start"], d["char_end"]) == (0, 18)
    assert d["sources"] == [
        {"retriever": "bm25", "rank": 1, "score": pytest.approx(hit.sources[0][2])}
    ]
    assert json.loads(json.dumps(d)) == d
    again = pickle.loads(pickle.dumps(hit))
    assert isinstance(again, keel.Hit)
    assert again.to_dict() == d
    assert again.sources == hit.sources


def test_document_to_dict_pickle_and_equality() -> None:
    doc = keel.Document("a", "the text", "The title", {"k": [1, 2]})
    assert (doc.id, doc.text, doc.title, doc.metadata) == (
        "a",
        "the text",
        "The title",
        {"k": [1, 2]},
    )
    assert doc.to_dict() == {
        "id": "a",
        "text": "the text",
        "title": "The title",
        "metadata": {"k": [1, 2]},
    }
    assert_plain_json(doc.to_dict())
    assert pickle.loads(pickle.dumps(doc)) == doc
    assert keel.Document("a", "x") == keel.Document("a", "x", "")
    assert keel.Document("a", "x") != keel.Document("a", "x", "t")
    assert keel.Document("a", "x").metadata is None
    with pytest.raises(keel.MetadataFilterError, match="dict"):
        keel.Document("a", "x", metadata=[1])  # type: ignore[arg-type]


@pytest.fixture
def memory(tmp_path: Path) -> keel.Memory:
    return keel.Memory(tmp_path / "m.db", keel.Keyring.generate())


def test_message_to_dict_json_and_pickle(memory: keel.Memory) -> None:
    memory.append("t", "u", "s", "user", "hello there", metadata={"lang": "en"}, tokens=3)
    memory.append("t", "u", "s", "assistant", "hi")
    newest, oldest = memory.history("t", "u", "s")
    d = oldest.to_dict()
    assert_plain_json(d)
    assert d == {
        "id": oldest.id,
        "role": "user",
        "content": "hello there",
        "metadata": {"lang": "en"},
        "tokens": 3,
        "created_at_ms": oldest.created_at_ms,
    }
    assert newest.to_dict()["metadata"] is None
    again = pickle.loads(pickle.dumps(oldest))
    assert isinstance(again, keel.Message)
    assert again.to_dict() == d and again.metadata_json == oldest.metadata_json


def test_identity_key_info_and_audit_entry_to_dict_never_hold_the_key(tmp_path: Path) -> None:
    keyring = keel.Keyring.generate()
    audit = keel.AuditLog(tmp_path / "k.db", keyring)
    keys = keel.ApiKeys(tmp_path / "k.db", keyring, audit=audit)
    plaintext, info = keys.create(
        "acme", "bot", scopes=["chat:write"], metadata='{"team": "x"}', rate_limit=(10, 60.0)
    )
    identity = keys.verify(plaintext)

    d = identity.to_dict()
    assert_plain_json(d)
    assert d == {
        "key_id": info.key_id,
        "tenant": "acme",
        "name": "bot",
        "env": identity.env,
        "scopes": ["chat:write"],
        "rate_limit": {"limit": 10, "window_seconds": 60.0},
    }
    # An Identity is proof of a verified key: it cannot be rebuilt from data.
    with pytest.raises(TypeError):
        pickle.dumps(identity)

    d = info.to_dict()
    assert_plain_json(d)
    assert (
        d["id"] == info.key_id and d["display"] == info.display and d["metadata"] == '{"team": "x"}'
    )
    assert d["rate_limit"] == {"limit": 10, "window_seconds": 60.0}
    assert d["revoked_at"] is None and d["created_at_ms"] == info.created_at_ms
    again = pickle.loads(pickle.dumps(info))
    assert isinstance(again, keel.ApiKeyInfo) and again.to_dict() == d

    for record in (identity.to_dict(), info.to_dict()):
        text = json.dumps(record)
        assert plaintext not in text and plaintext[16:] not in text

    (entry,) = audit.query()
    d = entry.to_dict()
    assert_plain_json(d)
    assert d == {
        "seq": 1,
        "at": entry.at_ms / 1000,
        "at_ms": entry.at_ms,
        "actor": "admin",
        "action": "api_key.create",
        "target": entry.target,
        "outcome": "success",
        "request_id": None,
    }
    again = pickle.loads(pickle.dumps(entry))
    assert isinstance(again, keel.AuditEntry) and again.to_dict() == d
