use proptest::prelude::*;

use super::*;

fn split(text: &str) -> Vec<String> {
    SentenceSegmenter::split(text, SegmenterOptions::default()).unwrap()
}

fn split_with(text: &str, min: usize, max: usize) -> Vec<String> {
    let opts = SegmenterOptions {
        min_chars: min,
        max_chars: max,
    };
    SentenceSegmenter::split(text, opts).unwrap()
}

/// Feeds `text` cut at the given byte offsets (clamped to char boundaries).
fn streamed(text: &str, cuts: &[usize], opts: SegmenterOptions) -> Vec<String> {
    let mut seg = SentenceSegmenter::new(opts).unwrap();
    let mut out = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut c = c % (text.len() + 1);
            while !text.is_char_boundary(c) {
                c -= 1;
            }
            c
        })
        .collect();
    bounds.sort_unstable();
    for b in bounds.into_iter().chain([text.len()]) {
        if b >= start {
            out.extend(seg.push(&text[start..b]));
            start = b;
        }
    }
    out.extend(seg.flush());
    out
}

/// Hard cases: the input and the pieces expected with the default options.
const CASES: &[(&str, &[&str])] = &[
    // plain
    ("Hello. How are you?", &["Hello. ", "How are you?"]),
    ("Hi! Great to see you.", &["Hi! ", "Great to see you."]),
    ("Really?! Yes.", &["Really?! ", "Yes."]),
    // abbreviations
    (
        "Dr. Smith is here. He waits.",
        &["Dr. Smith is here. ", "He waits."],
    ),
    (
        "Use a tool, e.g. a hammer. Then stop.",
        &["Use a tool, e.g. a hammer. ", "Then stop."],
    ),
    (
        "Cats (i.e. felines) purr. Dogs bark.",
        &["Cats (i.e. felines) purr. ", "Dogs bark."],
    ),
    (
        "Mr. and Mrs. Jones vs. Prof. Lee.",
        &["Mr. and Mrs. Jones vs. Prof. Lee."],
    ),
    (
        "It costs approx. five dollars.",
        &["It costs approx. five dollars."],
    ),
    (
        "See Fig. 3 and No. 12. Both help.",
        &["See Fig. 3 and No. 12. ", "Both help."],
    ),
    ("No. I cannot do that.", &["No. ", "I cannot do that."]),
    (
        "Born on Jan. 5 in Paris. She left.",
        &["Born on Jan. 5 in Paris. ", "She left."],
    ),
    (
        "Apples, pears, etc. are fruit.",
        &["Apples, pears, etc. are fruit."],
    ),
    (
        "They sell apples, pears, etc. The shop opens at nine.",
        &["They sell apples, pears, etc. ", "The shop opens at nine."],
    ),
    (
        "Apple Inc. The company grew.",
        &["Apple Inc. ", "The company grew."],
    ),
    // initialisms
    (
        "I live in the U.S. The weather is fine.",
        &["I live in the U.S. ", "The weather is fine."],
    ),
    ("The U.S. Army is large.", &["The U.S. Army is large."]),
    (
        "Meet at 5 p.m. tomorrow. Bring snacks.",
        &["Meet at 5 p.m. tomorrow. ", "Bring snacks."],
    ),
    (
        "We meet at 5 p.m. Then we eat.",
        &["We meet at 5 p.m. ", "Then we eat."],
    ),
    (
        "She has a Ph.D. in physics.",
        &["She has a Ph.D. in physics."],
    ),
    (
        "J. K. Rowling wrote it. It sold well.",
        &["J. K. Rowling wrote it. ", "It sold well."],
    ),
    // numbers, versions, URLs, e-mail
    (
        "Pi is 3.14159. It never ends.",
        &["Pi is 3.14159. ", "It never ends."],
    ),
    (
        "Upgrade to v2.3.1 now. It fixes bugs.",
        &["Upgrade to v2.3.1 now. ", "It fixes bugs."],
    ),
    (
        "Install version 1.2. Then restart.",
        &["Install version 1.2. ", "Then restart."],
    ),
    (
        "Visit https://example.com/a?b=c. Then log in.",
        &["Visit https://example.com/a?b=c. ", "Then log in."],
    ),
    (
        "Go to example.com. It is free.",
        &["Go to example.com. ", "It is free."],
    ),
    (
        "Write to help@example.org. We answer fast.",
        &["Write to help@example.org. ", "We answer fast."],
    ),
    (
        "It grew 12.5% in 2023. Sales rose.",
        &["It grew 12.5% in 2023. ", "Sales rose."],
    ),
    // ellipses
    ("Well... maybe later.", &["Well... maybe later."]),
    ("Wait... What happened?", &["Wait... ", "What happened?"]),
    ("Hmm… I see. Go on.", &["Hmm… ", "I see. ", "Go on."]),
    // quotes and brackets
    (
        "He said \"Stop.\" Then he left.",
        &["He said \"Stop.\" ", "Then he left."],
    ),
    ("\"Really?\" she asked.", &["\"Really?\" she asked."]),
    (
        "(See the table.) Next comes the list.",
        &["(See the table.) ", "Next comes the list."],
    ),
    (
        "It ended. \"Why?\" he asked.",
        &["It ended. ", "\"Why?\" he asked."],
    ),
    ("She said “Go.” We went.", &["She said “Go.” ", "We went."]),
    ("**Done.** Next step.", &["**Done.** ", "Next step."]),
    // list items and line breaks
    (
        "Steps:\n1. Open the app.\n2. Click Save.",
        &["Steps:\n", "1. Open the app.\n", "2. Click Save."],
    ),
    (
        "- first item\n- second item",
        &["- first item\n", "- second item"],
    ),
    (
        "Steps: 1. Open it. 2. Close it.",
        &["Steps: 1. Open it. ", "2. Close it."],
    ),
    (
        "# Title\n\nBody text here.",
        &["# Title\n\n", "Body text here."],
    ),
    ("a. Red\nb. Blue", &["a. Red\n", "b. Blue"]),
    // emoji
    (
        "Great job! 🎉 Next, save it.",
        &["Great job! 🎉 ", "Next, save it."],
    ),
    ("Done!🎉 Now rest.", &["Done!🎉 ", "Now rest."]),
    ("Thanks! 👍🏽 See you.", &["Thanks! 👍🏽 ", "See you."]),
    ("I love it ❤️ really.", &["I love it ❤️ really."]),
    // CJK
    (
        "你好。今天天气很好！你呢？",
        &["你好。", "今天天气很好！", "你呢？"],
    ),
    (
        "「行こう。」彼は言った。",
        &["「行こう。」", "彼は言った。"],
    ),
    (
        "こんにちは。 元気ですか？",
        &["こんにちは。 ", "元気ですか？"],
    ),
    // other scripts
    ("Как дела? Хорошо.", &["Как дела? ", "Хорошо."]),
    ("क्या हाल है। ठीक है।", &["क्या हाल है। ", "ठीक है।"]),
    // whitespace
    (
        "  Leading space. Next.  ",
        &["  Leading space. ", "Next.  "],
    ),
    ("No terminator at the end", &["No terminator at the end"]),
    ("", &[]),
    ("   ", &["   "]),
    ("Dr.\u{a0}Who? Yes.", &["Dr.\u{a0}Who? ", "Yes."]),
];

#[test]
fn hard_cases_split_as_expected() {
    let mut failures = Vec::new();
    for (text, want) in CASES {
        let got = split(text);
        if got != *want {
            failures.push(format!("{text:?}\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hard_cases_split_the_same_token_by_token() {
    for (text, want) in CASES {
        // One char per token: the finest chunking.
        let cuts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
        assert_eq!(
            streamed(text, &cuts, SegmenterOptions::default()),
            *want,
            "{text:?}"
        );
    }
}

#[test]
fn a_sentence_comes_out_as_soon_as_the_next_word_starts() {
    let mut seg = SentenceSegmenter::default();
    assert!(seg.push("Hello.").is_empty());
    assert!(
        seg.push(" ").is_empty(),
        "undecided: could be 'Hello. world'"
    );
    assert_eq!(seg.push("W"), ["Hello. "]);
    assert!(seg.push("orld.").is_empty());
    assert_eq!(seg.flush(), ["World."]);
    assert!(seg.flush().is_empty());
}

#[test]
fn an_initialism_waits_for_the_whole_next_word() {
    let mut seg = SentenceSegmenter::default();
    assert!(seg.push("In the U.S. Th").is_empty());
    assert_eq!(seg.push("e "), ["In the U.S. "]);
}

#[test]
fn a_cjk_sentence_ends_on_the_next_char() {
    let mut seg = SentenceSegmenter::default();
    assert!(
        seg.push("你好。").is_empty(),
        "a closing bracket may follow"
    );
    assert_eq!(seg.push("今"), ["你好。"]);
}

#[test]
fn overlong_sentences_split_at_a_clause_then_a_space_then_anywhere() {
    let text = "one two three four five six, seven eight nine ten eleven twelve thirteen.";
    let pieces = split_with(text, 0, 40);
    assert_eq!(pieces[0], "one two three four five six, ");
    assert_eq!(pieces.concat(), text);
    // No clause mark in the second half: the last space.
    let pieces = split_with("aaaa, bbbbbbbbbbbbbbbbbbbbbbbbbbb cccccc dddddddddd", 0, 40);
    assert_eq!(
        pieces,
        ["aaaa, bbbbbbbbbbbbbbbbbbbbbbbbbbb cccccc ", "dddddddddd"]
    );
    // No space at all: grapheme boundaries.
    let long = "x".repeat(25);
    assert_eq!(
        split_with(&long, 0, 10),
        ["x".repeat(10), "x".repeat(10), "x".repeat(5)]
    );
    // CJK clause marks.
    let cjk = "我们今天去公园散步，然后去超市买东西，最后回家吃晚饭。";
    let pieces = split_with(cjk, 0, 12);
    assert_eq!(pieces[0], "我们今天去公园散步，");
    assert!(pieces.iter().all(|p| spoken_len(p) <= 12), "{pieces:?}");
}

#[test]
fn a_grapheme_is_never_cut() {
    let family = "👨\u{200d}👩\u{200d}👧";
    let text = format!("{family}{family}{family}{family}");
    for piece in split_with(&text, 0, 8) {
        assert_eq!(
            piece.graphemes(true).count(),
            piece.chars().count() / 5,
            "{piece:?}"
        );
    }
}

#[test]
fn short_sentences_are_joined_up_to_min_chars() {
    assert_eq!(
        split_with("Yes. Sure. I can help with that. Ok.", 10, 300),
        ["Yes. Sure. ", "I can help with that. ", "Ok."]
    );
    // Joining never exceeds max_chars.
    assert_eq!(
        split_with("Yes. Absolutely right.", 8, 12),
        ["Yes. ", "Absolutely ", "right."]
    );
}

#[test]
fn bytes_may_split_a_character_between_tokens() {
    let text = "Ça va? Très bien. 你好。";
    for cut in 0..=text.len() {
        let mut seg = SentenceSegmenter::default();
        let mut out = seg.push_bytes(&text.as_bytes()[..cut]).unwrap();
        out.extend(seg.push_bytes(&text.as_bytes()[cut..]).unwrap());
        out.extend(seg.flush_bytes().unwrap());
        assert_eq!(out, ["Ça va? ", "Très bien. ", "你好。"], "cut at {cut}");
    }
}

#[test]
fn invalid_utf8_is_refused_and_changes_nothing() {
    let mut seg = SentenceSegmenter::default();
    assert!(seg.push_bytes(b"Hi. \xc3").unwrap().is_empty());
    let err = seg.push_bytes(b"(").unwrap_err();
    assert!(
        matches!(err, crate::Error::Stream(StreamError::InvalidUtf8(_))),
        "{err}"
    );
    let err = seg.push_bytes(b"\x87a \xff").unwrap_err();
    assert!(err.to_string().contains("offset 3"), "{err}");
    assert_eq!(seg.push_bytes(b"\x87a va.").unwrap(), ["Hi. "]);
    assert_eq!(seg.flush_bytes().unwrap(), ["Ça va."]);
    // Ending inside a character.
    seg.push_bytes(b"ok \xe4\xbd").unwrap();
    assert!(seg.flush_bytes().is_err());
    assert_eq!(seg.flush_bytes().unwrap(), ["ok "]);
}

#[test]
fn undecided_text_stays_bounded_on_endless_punctuation_or_emoji() {
    let streams = [
        ("!", "!"),
        ("Hi", ".)"),
        ("Hi. ", "("),
        ("Hi! ", "🎉"),
        ("Yes", "?\u{201d}"),
    ];
    for (head, unit) in streams {
        let opts = SegmenterOptions::new(None, Some(40)).unwrap();
        let mut seg = SentenceSegmenter::new(opts).unwrap();
        let mut text = String::from(head);
        let mut out = seg.push(head);
        for _ in 0..2000 {
            out.extend(seg.push(unit));
            text.push_str(unit);
            assert!(
                seg.pending_len() <= 40 * 4 + 64 + 8,
                "{head:?}+{unit:?}: {}",
                seg.pending_len()
            );
        }
        out.extend(seg.flush());
        assert_eq!(out.concat(), text);
        assert_eq!(out, split_with(&text, 0, 40), "{head:?}+{unit:?}");
    }
}

#[test]
fn bad_options_are_refused() {
    assert!(matches!(
        SegmenterOptions::new(None, Some(3)),
        Err(crate::Error::Stream(StreamError::InvalidOptions(m))) if m.contains("max_chars = 3")
    ));
    assert!(matches!(
        SegmenterOptions::new(Some(50), Some(20)),
        Err(crate::Error::Stream(StreamError::InvalidOptions(m))) if m.contains("min_chars = 50")
    ));
    assert_eq!(
        SegmenterOptions::new(None, None).unwrap(),
        SegmenterOptions::default()
    );
}

/// Text made of pieces that exercise the rules, glued with random separators.
fn speechy_text() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "Hello",
        "world",
        "Dr.",
        "e.g.",
        "U.S.",
        "p.m.",
        "3.14",
        "v1.2.3",
        "No.",
        "5",
        "1.",
        "a.",
        "...",
        "…",
        ".",
        "!",
        "?",
        "?!",
        "\"",
        "“",
        "”",
        "(",
        ")",
        "**",
        "🎉",
        "👍🏽",
        "❤️",
        "你好",
        "。",
        "！",
        "」",
        "，",
        ",",
        ";",
        "—",
        "https://x.io/a?b=c",
        "The",
        "Then",
        "it",
        "i.e.",
        "J.",
        "etc.",
        "Inc.",
        "\u{a0}",
        "é",
        "e\u{301}",
        "👨\u{200d}👩\u{200d}👧",
    ]);
    let seps = prop::sample::select(vec!["", " ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n"]);
    prop::collection::vec((atoms, seps), 0..40)
        .prop_map(|v| v.into_iter().map(|(a, s)| format!("{a}{s}")).collect())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![speechy_text(), "\\PC{0,80}", "[a-zA-Z .!?,\n\"()]{0,120}"]
}

fn options() -> impl Strategy<Value = SegmenterOptions> {
    (0usize..40, SMALLEST_MAX_CHARS..120).prop_map(|(min, max)| SegmenterOptions {
        min_chars: min.min(max),
        max_chars: max,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn pieces_concatenate_to_the_input_whatever_the_chunking(
        text in any_text(),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
        opts in options(),
    ) {
        let whole = SentenceSegmenter::split(&text, opts).unwrap();
        prop_assert_eq!(whole.concat(), text.clone());
        let pieces = streamed(&text, &cuts, opts);
        prop_assert_eq!(&pieces, &whole);
    }

    #[test]
    fn pieces_respect_the_bounds_and_the_whitespace_rule(
        text in any_text(),
        opts in options(),
    ) {
        let pieces = SentenceSegmenter::split(&text, opts).unwrap();
        for (k, piece) in pieces.iter().enumerate() {
            prop_assert!(!piece.is_empty());
            let len = spoken_len(piece);
            prop_assert!(
                len <= opts.max_chars || piece.trim_end_matches(is_space).graphemes(true).count() == 1,
                "piece {:?} has {} chars > {}", piece, len, opts.max_chars
            );
            if k > 0 {
                prop_assert!(!piece.starts_with(is_space), "piece {:?} starts with a space", piece);
            }
            // A short piece is the last one, or joining it to the next would pass max_chars.
            if len < opts.min_chars && k + 1 < pieces.len() {
                let joined = piece.chars().count() + spoken_len(&pieces[k + 1]);
                prop_assert!(joined > opts.max_chars, "short piece {:?} not joined", piece);
            }
        }
    }
}
