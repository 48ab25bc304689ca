use proptest::prelude::*;

use super::*;

fn parse_all(bytes: &[u8]) -> Vec<SseEvent> {
    SseParser::new().feed(bytes).unwrap()
}

fn ev(event: Option<&str>, data: &str, id: Option<&str>, retry_ms: Option<u64>) -> SseEvent {
    SseEvent {
        event: event.map(str::to_owned),
        data: data.to_owned(),
        id: id.map(str::to_owned),
        retry_ms,
    }
}

#[test]
fn encodes_every_field_and_multi_line_data() {
    let e = ev(Some("token"), "a\r\nb\rc\nd", Some("42"), Some(1500));
    assert_eq!(
        encode_event(&e).unwrap(),
        "event: token\nid: 42\nretry: 1500\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    );
    assert_eq!(encode_event(&SseEvent::new("")).unwrap(), "data: \n\n");
    assert_eq!(encode_comment(""), ":\n\n");
    assert_eq!(encode_comment("ping"), ": ping\n\n");
    assert_eq!(encode_comment("a\nb"), ": a\n: b\n\n");
}

#[test]
fn fields_the_wire_cannot_carry_are_refused() {
    let bad = [
        (ev(Some("a\nb"), "x", None, None), "event", "a line break"),
        (ev(None, "x", Some("1\r"), None), "id", "a line break"),
        (ev(None, "x", Some("1\0"), None), "id", "NUL"),
    ];
    for (e, field, what) in bad {
        let err = encode_event(&e).unwrap_err();
        assert!(
            matches!(&err, crate::Error::Stream(StreamError::InvalidSseField { field: f, what: w }) if *f == field && *w == what),
            "{err}"
        );
        let mut out = String::from("kept");
        assert!(encode_event_into(&e, &mut out).is_err());
        assert_eq!(out, "kept");
    }
}

/// The WHATWG rules, line by line.
#[test]
fn parses_like_a_browser() {
    let cases: &[(&str, &[SseEvent])] = &[
        ("data: hi\n\n", &[ev(None, "hi", None, None)]),
        ("data:hi\n\n", &[ev(None, "hi", None, None)]),
        (
            "data:  two spaces\n\n",
            &[ev(None, " two spaces", None, None)],
        ),
        ("data: a\ndata: b\n\n", &[ev(None, "a\nb", None, None)]),
        ("data\n\n", &[ev(None, "", None, None)]),
        ("data:\ndata:\n\n", &[ev(None, "\n", None, None)]),
        (
            "event: add\ndata: 1\n\n",
            &[ev(Some("add"), "1", None, None)],
        ),
        (": comment\ndata: x\n\n", &[ev(None, "x", None, None)]),
        ("event: x\n\n", &[]),
        ("id: 1\n\ndata: x\n\n", &[ev(None, "x", Some("1"), None)]),
        (
            "id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
            &[
                ev(None, "a", Some("1"), None),
                ev(None, "b", Some("1"), None),
                ev(None, "c", None, None),
            ],
        ),
        ("id: a\0b\ndata: x\n\n", &[ev(None, "x", None, None)]),
        ("retry: 300\ndata: x\n\n", &[ev(None, "x", None, Some(300))]),
        ("retry: 3s\ndata: x\n\n", &[ev(None, "x", None, None)]),
        ("retry:\ndata: x\n\n", &[ev(None, "x", None, None)]),
        ("foo: bar\ndata: x\n\n", &[ev(None, "x", None, None)]),
        (
            "data: a\r\n\r\ndata: b\r\rdata: c\n\n",
            &[
                ev(None, "a", None, None),
                ev(None, "b", None, None),
                ev(None, "c", None, None),
            ],
        ),
        ("\u{feff}data: bom\n\n", &[ev(None, "bom", None, None)]),
        (
            "data: x\n\n\u{feff}data: y\n\n",
            &[ev(None, "x", None, None)],
        ),
        ("data: unfinished\n", &[]),
        ("data: [DONE]\n\n", &[ev(None, "[DONE]", None, None)]),
    ];
    for (stream, want) in cases {
        assert_eq!(parse_all(stream.as_bytes()), *want, "{stream:?}");
    }
    assert!(parse_all(b"data: [DONE]\n\n")[0].is_done());
}

#[test]
fn a_crlf_split_between_reads_is_one_line_end() {
    let mut p = SseParser::new();
    assert!(p.feed(b"data: a\r").unwrap().is_empty());
    assert!(
        p.feed(b"\n").unwrap().is_empty(),
        "the LF belongs to the CR"
    );
    assert_eq!(p.feed(b"\r\n").unwrap(), [ev(None, "a", None, None)]);
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    assert_eq!(
        parse_all(b"data: a\xffb\n\n"),
        [ev(None, "a\u{fffd}b", None, None)]
    );
}

#[test]
fn a_line_that_never_ends_is_bounded_and_the_parser_recovers() {
    let mut p = SseParser::with_max_event_bytes(64).unwrap();
    assert_eq!(
        p.feed(b"data: ok\n\ndata: ").unwrap(),
        [ev(None, "ok", None, None)]
    );
    let chunk = [b'x'; 40];
    assert!(p.feed(&chunk).unwrap().is_empty());
    let err = p.feed(&chunk).unwrap_err();
    assert!(
        matches!(
            err,
            crate::Error::Stream(StreamError::SseTooLarge { limit: 64 })
        ),
        "{err}"
    );
    // Nothing more is held while the line goes on, and the event it belonged to is dropped.
    for _ in 0..100 {
        assert!(p.feed(&chunk).unwrap().is_empty());
        assert!(p.line.capacity() <= 64);
    }
    assert!(p.feed(b"\ndata: tail\n\n").unwrap().is_empty());
    assert_eq!(
        p.feed(b"data: next\n\n").unwrap(),
        [ev(None, "next", None, None)]
    );
}

#[test]
fn data_that_grows_past_the_limit_drops_its_event() {
    let mut p = SseParser::with_max_event_bytes(16).unwrap();
    let err = p.feed(b"data: 0123456789\ndata: 0123456789\ndata: z\n\ndata: ok\n\n");
    assert!(matches!(
        err,
        Err(crate::Error::Stream(StreamError::SseTooLarge { .. }))
    ));
    // Events completed in the failed read come with the next one.
    assert_eq!(p.feed(b"").unwrap(), [ev(None, "ok", None, None)]);
    assert!(SseParser::with_max_event_bytes(0).is_err());
}

#[test]
fn an_openai_stream_parses_to_chunks_then_done() {
    let body = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
        "data: [DONE]\n\n",
    );
    let events = parse_all(body.as_bytes());
    assert_eq!(events.len(), 3);
    assert!(events[2].is_done());
    assert_eq!(events[0].event_type(), "message");
}

fn field_text() -> impl Strategy<Value = String> {
    "[^\r\n\0]{0,12}"
}

fn event() -> impl Strategy<Value = SseEvent> {
    (
        prop::option::of(field_text()),
        "(\\PC|\r|\n|\r\n){0,40}",
        prop::option::of(field_text()),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(event, data, id, retry_ms)| SseEvent {
            event,
            data,
            id,
            retry_ms,
        })
}

/// Random wire text: fields, comments, junk, BOMs and blank lines with mixed line ends.
fn wire() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "data:[^\r\n]{0,10}",
        "data: [^\r\n]{0,10}",
        "event: ?[a-z]{0,5}",
        "id: ?[0-9a-z]{0,4}",
        "retry: ?[0-9]{0,4}",
        ":[^\r\n]{0,6}",
        "[^\r\n]{0,8}",
        Just(String::new()),
        Just("\u{feff}data: x".to_owned()),
    ];
    let end = prop::sample::select(vec!["\n", "\r", "\r\n"]);
    (
        prop::bool::ANY,
        prop::collection::vec((line, end), 0..30),
        prop::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(bom, lines, junk)| {
            let mut out = if bom {
                b"\xEF\xBB\xBF".to_vec()
            } else {
                Vec::new()
            };
            for (l, e) in lines {
                out.extend_from_slice(l.as_bytes());
                out.extend_from_slice(e.as_bytes());
            }
            out.extend(junk);
            out
        })
}

fn feed_split(bytes: &[u8], cuts: &[usize]) -> (Vec<SseEvent>, String, Option<u64>) {
    let mut p = SseParser::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([bytes.len()]) {
        out.extend(p.feed(&bytes[start..c]).unwrap());
        start = c;
    }
    (out, p.last_event_id().to_owned(), p.retry_ms())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_parse_round_trips(events in prop::collection::vec(event(), 0..8)) {
        let mut wire = String::new();
        for e in &events {
            encode_event_into(e, &mut wire).unwrap();
            wire.push_str(&encode_comment("hb"));
        }
        let parsed = parse_all(wire.as_bytes());
        let mut id: Option<String> = None;
        let want: Vec<SseEvent> = events
            .iter()
            .map(|e| {
                if let Some(new) = &e.id {
                    id = (!new.is_empty()).then(|| new.clone());
                }
                SseEvent {
                    event: e.event.clone().filter(|n| !n.is_empty()),
                    data: e.data.replace("\r\n", "\n").replace('\r', "\n"),
                    id: id.clone(),
                    retry_ms: e.retry_ms,
                }
            })
            .collect();
        prop_assert_eq!(parsed, want);
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_events(
        bytes in wire(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        prop_assert_eq!(feed_split(&bytes, &cuts), feed_split(&bytes, &[]));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        prop_assert_eq!(feed_split(&bytes, &cuts), feed_split(&bytes, &[]));
    }
}
