use super::*;

fn tmp() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "keel-kb-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn corpus() -> PathBuf {
    let dir = tmp().join("docs");
    write(
        &dir,
        "wings.md",
        "# Wings\n\nThe lift of a wing grows with its angle of attack.\n",
    );
    write(
        &dir,
        "shells.txt",
        "Thin cylindrical shells buckle under axial compression.",
    );
    write(
        &dir,
        "sub/heat.html",
        "<html><head><title>Heat &amp; flow</title><script>var x = 1;</script></head>\
         <body><h1>Heat</h1><p>Heat transfer in a <b>laminar</b> boundary layer.</p></body></html>",
    );
    write(&dir, "skip.pdf", "not indexed");
    write(&dir, ".hidden.txt", "not indexed either");
    dir
}

#[test]
fn indexes_a_folder_and_cites_exact_offsets() {
    let dir = corpus();
    let kb = KnowledgeBase::in_memory().unwrap();
    let report = kb.index_folder(&dir).unwrap();
    assert_eq!(
        (
            report.added,
            report.updated,
            report.removed,
            report.unchanged
        ),
        (3, 0, 0, 0)
    );
    assert_eq!(report.chunks, 3);
    assert_eq!(kb.documents(), 3);
    let hits = kb.search("lift of a wing", 2).unwrap();
    assert_eq!(hits[0].doc_id(), "wings.md");
    assert_eq!(hits[0].passage.title, "Wings");
    // BM25 alone reports BM25's score, not a fused one.
    assert_eq!(hits[0].score, f64::from(hits[0].sources[0].score));
    assert!(hits[0].score > 0.5, "{}", hits[0].score);
    let source = std::fs::read_to_string(dir.join("wings.md")).unwrap();
    let s = hits[0].span();
    assert_eq!(&source[s.byte_start..s.byte_end], hits[0].passage.text);
    let heat = &kb.search("laminar heat", 1).unwrap()[0];
    assert_eq!(heat.doc_id(), "sub/heat.html");
    assert_eq!(heat.passage.title, "Heat & flow");
    assert!(
        heat.passage.text.contains("laminar boundary layer"),
        "{:?}",
        heat.passage.text
    );
    assert!(!heat.passage.text.contains("var x"));
    assert!(!heat.passage.text.contains('<'));
    assert_eq!(heat.passage.metadata["format"], "html");
    assert!(kb.search("indexed", 5).unwrap().is_empty());
}

#[test]
fn reindex_touches_only_changed_files_and_removes_deleted_ones() {
    let dir = corpus();
    let kb = KnowledgeBase::in_memory().unwrap();
    kb.index_folder(&dir).unwrap();
    let again = kb.index_folder(&dir).unwrap();
    assert_eq!(
        again,
        IndexReport {
            unchanged: 3,
            ..IndexReport::default()
        }
    );
    write(
        &dir,
        "shells.txt",
        "Conical shells vibrate.\n\nThey also buckle.",
    );
    std::fs::remove_file(dir.join("wings.md")).unwrap();
    write(&dir, "new.txt", "Supersonic inlets.");
    let r = kb.index_folder(&dir).unwrap();
    assert_eq!((r.added, r.updated, r.removed, r.unchanged), (1, 1, 1, 1));
    assert_eq!(r.chunks, 2);
    assert!(kb.search("wing lift", 5).unwrap().is_empty());
    assert_eq!(kb.search("conical", 1).unwrap()[0].doc_id(), "shells.txt");
    assert!(kb.search("cylindrical", 5).unwrap().is_empty());
    // A file emptied loses its passages.
    write(&dir, "new.txt", "   ");
    let r = kb.index_folder(&dir).unwrap();
    assert_eq!((r.updated, r.chunks), (1, 0));
    assert!(kb.search("supersonic", 5).unwrap().is_empty());
}

#[test]
fn persists_and_reopens_without_reindexing() {
    let dir = corpus();
    let at = tmp().join("kb");
    {
        let kb = KnowledgeBase::builder().path(&at).open().unwrap();
        kb.index_folder(&dir).unwrap();
    }
    let kb = KnowledgeBase::builder().path(&at).open().unwrap();
    assert_eq!(kb.documents(), 3);
    assert_eq!(kb.search("buckle", 1).unwrap()[0].doc_id(), "shells.txt");
    let r = kb.index_folder(&dir).unwrap();
    assert_eq!(r.unchanged, 3);
    assert_eq!(r.chunks, 0);
    // Other chunking than the stored one is refused, naming the setting.
    let err = KnowledgeBase::builder()
        .path(&at)
        .options(KnowledgeBaseOptions {
            chunk_size: Some(50),
            ..Default::default()
        })
        .open()
        .unwrap_err();
    assert!(
        err.to_string().contains("chunk_size = 1000, not 50"),
        "{err}"
    );
}

#[test]
fn progress_counts_every_file_and_can_stop() {
    let dir = corpus();
    let kb = KnowledgeBase::in_memory().unwrap();
    let mut seen = Vec::new();
    kb.index_folder_with_progress(&dir, &mut |p| {
        seen.push(p);
        true
    })
    .unwrap();
    assert_eq!(seen.first(), Some(&IndexProgress { done: 0, total: 3 }));
    assert_eq!(seen.last(), Some(&IndexProgress { done: 3, total: 3 }));
    let kb = KnowledgeBase::in_memory().unwrap();
    let err = kb
        .index_folder_with_progress(&dir, &mut |_| false)
        .unwrap_err();
    assert_eq!(err, RagError::Cancelled { done: 0, total: 3 });
    assert_eq!(kb.documents(), 0);
}

#[test]
fn bad_input_is_a_typed_error_naming_the_path() {
    let kb = KnowledgeBase::in_memory().unwrap();
    let missing = tmp().join("nope");
    match kb.index_folder(&missing).unwrap_err() {
        RagError::Source { path, reason } => {
            assert_eq!(path, missing.display().to_string());
            assert_eq!(reason, "no such folder");
        }
        e => panic!("{e:?}"),
    }
    let dir = corpus();
    std::fs::write(dir.join("bad.txt"), b"ok \xff\xfe").unwrap();
    match kb.index_folder(&dir).unwrap_err() {
        RagError::Source { path, reason } => {
            assert!(path.ends_with("bad.txt"), "{path}");
            assert!(reason.contains("not UTF-8"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    // Nothing changed: files are all read before any is indexed.
    assert_eq!(kb.documents(), 0);
    assert!(matches!(kb.search("x", 0), Err(RagError::InvalidConfig(m)) if m.contains("got 0")));
    let file = dir.join("shells.txt");
    assert!(matches!(
        kb.index_folder(&file),
        Err(RagError::Source { reason, .. }) if reason == "not a folder"
    ));
}

#[test]
fn add_and_delete_documents_beside_files() {
    let kb = KnowledgeBase::in_memory().unwrap();
    kb.add(Document::new("note", "a free-standing note about flutter"))
        .unwrap();
    assert_eq!(kb.search("flutter", 1).unwrap()[0].doc_id(), "note");
    assert!(kb.delete("note").unwrap());
    assert!(!kb.delete("note").unwrap());
}
