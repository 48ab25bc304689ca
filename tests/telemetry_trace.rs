//! Trace export end to end in Rust: keel's OTLP/HTTP exporter sends to a receiver started here
//! (decoded with the official `opentelemetry-proto` messages); the spans of one memory append,
//! one API-key verification and one BM25 search join the host's trace set with
//! `set_thread_context` (the C door's `keel_trace_context_set`), database client spans sit
//! beneath them, and no attribute carries a key, id or content (a probe proves the scan can
//! fail). One test per process: the subscriber is process-wide.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::auth::{ApiKeys, ApiKeysOptions, NewKey};
use keel::rag::{Bm25Config, Bm25Index, Document};
use keel::telemetry::trace::{self, BatchOptions, TraceOptions};
use keel::{Keyring, MemoryOptions, MemoryStore, NewMessage, SessionRef, Store, StoreOptions};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attrs: HashMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.clone()) {
        Some(Value::StringValue(s)) => s,
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Accepts OTLP/HTTP POSTs on loopback; sends each decoded span down the channel.
fn receiver() -> (String, mpsc::Receiver<Span>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || loop {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.to_ascii_lowercase();
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let req = ExportTraceServiceRequest::decode(&body[..]).unwrap();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| text(&kv.value))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            let _ = tx.send(Span {
                                service: service.clone(),
                                name: s.name,
                                trace_id: hex(&s.trace_id),
                                span_id: hex(&s.span_id),
                                parent: hex(&s.parent_span_id),
                                attrs: s
                                    .attributes
                                    .iter()
                                    .map(|kv| (kv.key.clone(), text(&kv.value)))
                                    .collect(),
                            });
                        }
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                );
            });
        }
    });
    (url, rx)
}

/// Collects spans until `done` holds or 20 s pass.
fn collect(rx: &mpsc::Receiver<Span>, seen: &mut Vec<Span>, done: impl Fn(&[Span]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) => seen.push(s),
            Err(_) => panic!("timed out; spans so far: {seen:#?}"),
        }
    }
}

fn leaks(spans: &[Span], canaries: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for s in spans {
        for c in canaries {
            let hit =
                s.name.contains(c) || s.attrs.iter().any(|(k, v)| k.contains(c) || v.contains(c));
            if hit {
                found.push(format!("{c} in {}", s.name));
            }
        }
    }
    found
}

#[test]
fn keel_spans_join_the_host_trace_and_carry_no_secret() {
    let (url, rx) = receiver();
    trace::init(TraceOptions {
        endpoint: Some(url),
        service_name: Some("rust-test".into()),
        batch: BatchOptions {
            scheduled_delay: Some(Duration::from_millis(50)),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    assert!(trace::enabled());

    let dir = std::env::temp_dir().join(format!("keel-trace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("keel.db");
    let keyring = Arc::new(Keyring::generate().unwrap());
    let store = Store::open(&db, StoreOptions::default()).unwrap();
    let keys = ApiKeys::new(store, Arc::clone(&keyring), ApiKeysOptions::default()).unwrap();
    let memory = MemoryStore::open(&db, Arc::clone(&keyring), MemoryOptions::default()).unwrap();
    let (api_key, _) = keys
        .create(
            "admin",
            &NewKey {
                tenant: "TENANT-canary".into(),
                name: "bot".into(),
                env: "live".into(),
                ..NewKey::default()
            },
        )
        .unwrap();
    let index = Bm25Index::new(Bm25Config::default()).unwrap();
    index
        .add(Document::new("d1", "opening hours are nine to five"))
        .unwrap();

    let host_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let host_span = "00f067aa0ba902b7";
    trace::set_thread_context(&format!("00-{host_trace}-{host_span}-01")).unwrap();
    let id = keys.verify(&api_key).unwrap();
    let at = SessionRef::new(&id.tenant, "USER-canary", "SESSION-canary");
    memory
        .append(&at, &NewMessage::new("user", "CONTENT-canary"))
        .unwrap();
    assert_eq!(index.search("when are you open", 3, None).len(), 1);
    trace::clear_thread_context();
    trace::flush().unwrap();

    let mut seen = Vec::new();
    let wanted = ["auth.verify", "memory.append", "rag.search"];
    collect(&rx, &mut seen, |s| {
        wanted
            .iter()
            .all(|w| s.iter().any(|x| x.name == *w && x.trace_id == host_trace))
    });
    let mine: Vec<&Span> = seen.iter().filter(|s| s.trace_id == host_trace).collect();
    for w in wanted {
        let s = mine.iter().find(|s| s.name == w).unwrap();
        assert_eq!(s.parent, host_span, "{w} is a child of the host span");
        assert_eq!(s.service, "rust-test");
    }
    let by_id: HashMap<&str, &&Span> = mine.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let append = mine.iter().find(|s| s.name == "memory.append").unwrap();
    let db_spans: Vec<_> = mine
        .iter()
        .filter(|s| s.attrs.get("db.system.name").map(String::as_str) == Some("sqlite"))
        .collect();
    assert!(
        db_spans.iter().any(|s| s.parent == append.span_id
            && s.attrs["db.operation.name"] == "TRANSACTION"
            && s.attrs.get("db.collection.name").map(String::as_str) == Some("memory_messages")
            && s.name == "TRANSACTION"),
        "{db_spans:#?}"
    );
    // The key check reads the API-key table.
    let verify_span = mine.iter().find(|s| s.name == "auth.verify").unwrap();
    assert!(
        db_spans.iter().any(|s| s.parent == verify_span.span_id
            && s.attrs.get("db.collection.name").map(String::as_str) == Some("api_keys")),
        "{db_spans:#?}"
    );
    for s in &db_spans {
        assert!(
            by_id.contains_key(s.parent.as_str()),
            "a db span has a keel parent"
        );
    }
    let verify = mine.iter().find(|s| s.name == "auth.verify").unwrap();
    assert_eq!(verify.attrs["keel.auth.outcome"], "ok");
    let search = mine.iter().find(|s| s.name == "rag.search").unwrap();
    assert_eq!(search.attrs["rag.candidates"], "1");

    let canaries = [api_key.as_str(), "canary"];
    assert_eq!(leaks(&seen, &canaries), Vec::<String>::new());
    // The scan can fail: a span that carries a canary is caught.
    trace::probe("x-canary-x");
    trace::flush().unwrap();
    collect(&rx, &mut seen, |s| s.iter().any(|x| x.name == "keel.probe"));
    assert_eq!(
        leaks(&seen, &canaries),
        vec!["canary in keel.probe".to_owned()]
    );

    trace::shutdown().unwrap();
    assert!(!trace::enabled());
    let _ = std::fs::remove_dir_all(&dir);
}
