"""keel.SentenceSegmenter, keel.sse_event / sse_comment, keel.SseParser: the Python door of
keel::stream (the rules themselves are tested in the core; here, the door's shape)."""

from __future__ import annotations

import random

import pytest

import keel

TEXT = (
    "Dr. Smith arrived at 5 p.m. He said hi. Pi is 3.14, e.g. in U.S. maths. "
    "Visit https://example.com/a?b=c. Then rest! 🎉 你好。再见。"
)
SENTENCES = [
    "Dr. Smith arrived at 5 p.m. ",
    "He said hi. ",
    "Pi is 3.14, e.g. in U.S. maths. ",
    "Visit https://example.com/a?b=c. ",
    "Then rest! 🎉 ",
    "你好。",
    "再见。",
]


def segment(tokens: list[str], **opts: int) -> list[str]:
    seg = keel.SentenceSegmenter(**opts)
    out: list[str] = []
    for t in tokens:
        out.extend(seg.push(t))
    return out + seg.flush()


def test_sentences_come_out_whatever_the_tokenisation() -> None:
    rng = random.Random(7)
    assert segment([TEXT]) == SENTENCES
    assert segment(list(TEXT)) == SENTENCES
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(TEXT)), rng.randint(1, 30)))
        tokens = [TEXT[a:b] for a, b in zip([0, *cuts], [*cuts, len(TEXT)])]
        assert segment(tokens) == SENTENCES


def test_a_sentence_is_returned_by_the_push_that_makes_it_certain() -> None:
    seg = keel.SentenceSegmenter()
    assert seg.push("Hello. ") == []
    assert seg.push("How") == ["Hello. "]
    assert seg.flush() == ["How"]
    assert seg.flush() == []


def test_options_default_in_the_core_and_bound_the_pieces() -> None:
    seg = keel.SentenceSegmenter()
    assert (seg.min_chars, seg.max_chars) == (0, 300)
    assert "max_chars=300" in repr(seg)
    pieces = segment(["one two three four five six, seven eight nine ten eleven."], max_chars=40)
    assert pieces[0] == "one two three four five six, "
    assert segment(["Yes. Sure. I can help with that."], min_chars=10) == [
        "Yes. Sure. ",
        "I can help with that.",
    ]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_chars": 3}, keel.StreamConfigError, "max_chars = 3"),
        ({"min_chars": 50, "max_chars": 20}, keel.StreamConfigError, "min_chars = 50"),
        ({"min_chars": -1}, keel.InvalidArgument, "min_chars"),
    ],
)
def test_bad_segmenter_options_raise_typed_errors(
    kwargs: dict[str, int], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        keel.SentenceSegmenter(**kwargs)
    assert issubclass(exc, ValueError)


def test_sse_event_and_comment_on_the_wire() -> None:
    assert keel.sse_event("hi") == "data: hi\n\n"
    assert (
        keel.sse_event("a\nb", event="token", id="7", retry_ms=1500)
        == "event: token\nid: 7\nretry: 1500\ndata: a\ndata: b\n\n"
    )
    assert keel.sse_comment() == ":\n\n"
    assert keel.sse_comment("ping") == ": ping\n\n"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"event": "a\nb"}, "event"), ({"id": "1\r"}, "id"), ({"id": "a\0"}, "id")],
)
def test_fields_the_wire_cannot_carry_raise(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(keel.SseFieldError, match=f"`{field}`") as info:
        keel.sse_event("x", **kwargs)
    assert info.value.field == field


def test_parser_reads_an_openai_stream_split_anywhere() -> None:
    body = (
        b'data: {"choices":[{"delta":{"content":"H\xc3\xa9"}}]}\r\n\r\n'
        b": keep-alive\r\n\r\n"
        b"id: 2\r\nevent: delta\r\ndata: a\r\ndata: b\r\n\r\n"
        b"data: [DONE]\r\n\r\n"
    )
    whole = keel.SseParser().feed(body)
    assert [e.data for e in whole] == ['{"choices":[{"delta":{"content":"Hé"}}]}', "a\nb", "[DONE]"]
    assert whole[1] == keel.SseEvent("a\nb", event="delta", id="2")
    assert whole[1].event_type == "delta" and whole[0].event_type == "message"
    assert whole[2].is_done and not whole[0].is_done
    for cut in range(len(body) + 1):
        p = keel.SseParser()
        assert p.feed(body[:cut]) + p.feed(body[cut:]) == whole
        assert p.last_event_id == "2"


def test_parser_takes_str_and_round_trips_the_encoder() -> None:
    wire = keel.sse_event("x\ny", event="e", id="9", retry_ms=10) + keel.sse_comment("hb")
    (ev,) = keel.SseParser().feed(wire)
    assert (ev.event, ev.data, ev.id, ev.retry_ms) == ("e", "x\ny", "9", 10)
    assert ev.encode() == keel.sse_event("x\ny", event="e", id="9", retry_ms=10)


def test_parser_memory_is_bounded_with_a_typed_error() -> None:
    p = keel.SseParser(max_event_bytes=64)
    assert p.max_event_bytes == 64
    p.feed(b"data: ")
    with pytest.raises(keel.SseTooLarge, match="64 bytes") as info:
        p.feed(b"x" * 100)
    assert info.value.limit == 64
    assert p.feed(b"x" * 100) == []
    assert p.feed(b"\n\ndata: ok\n\n") == [keel.SseEvent("ok")]
    with pytest.raises(keel.StreamConfigError):
        keel.SseParser(max_event_bytes=0)
    with pytest.raises(keel.InvalidArgument, match="bytes or str"):
        p.feed(3.5)  # type: ignore[arg-type]
