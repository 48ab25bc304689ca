use super::*;

#[test]
fn traceparent_round_trips() {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let h = HostContext::parse(tp).unwrap();
    assert_eq!(h.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(h.span_id, 0x00f067aa0ba902b7);
    assert!(h.sampled);
    assert_eq!(h.to_traceparent(), tp);
    let sc = h.context().span().span_context().clone();
    assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
}

#[test]
fn bad_traceparents_are_refused_by_name() {
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        let e = HostContext::parse(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{bad:?}: {e}");
        assert!(e.to_string().contains("traceparent"), "{e}");
    }
}

#[test]
fn thread_context_is_current_until_cleared() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(current_traceparent(), None);
    set_thread_context(tp).unwrap();
    assert_eq!(current_traceparent().as_deref(), Some(tp));
    // Another thread does not see it.
    std::thread::spawn(|| assert_eq!(current_traceparent(), None))
        .join()
        .unwrap();
    clear_thread_context();
    assert_eq!(current_traceparent(), None);
}

#[test]
fn endpoint_gets_the_traces_path_once() {
    let r = |e: &str| {
        resolve(&TraceOptions {
            endpoint: Some(e.into()),
            sample_ratio: Some(1.0),
            exporter: Some(Exporter::Otlp),
            service_name: Some("x".into()),
            ..Default::default()
        })
        .unwrap()
        .endpoint
        .unwrap()
    };
    assert_eq!(r("http://c:4318"), "http://c:4318/v1/traces");
    assert_eq!(r("http://c:4318/"), "http://c:4318/v1/traces");
    assert_eq!(r("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    let e = resolve(&TraceOptions {
        endpoint: Some("c:4318".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("c:4318"), "{e}");
}

#[test]
fn options_are_checked() {
    let e = resolve(&TraceOptions {
        sample_ratio: Some(1.5),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("1.5"), "{e}");
    let e = resolve(&TraceOptions {
        sample_ratio: Some(1.0),
        level: Some("loud".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("loud"), "{e}");
}

#[test]
fn log_records_are_json_with_ids() {
    let rec = LogRecord {
        level: tracing::Level::WARN,
        target: "keel::store".into(),
        message: "busy".into(),
        fields: vec![("db.system.name".into(), "sqlite".into())],
        trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
        span_id: Some("b7ad6b7169203331".into()),
    };
    let v: serde_json::Value = serde_json::from_str(&rec.to_json()).unwrap();
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["message"], "busy");
    assert_eq!(v["db.system.name"], "sqlite");
    assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(v["span_id"], "b7ad6b7169203331");
    let ts = v["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-01-02T03:04:05.123456Z".len(), "{ts}");
    assert!(ts.starts_with("20") && ts.ends_with('Z'), "{ts}");
}
