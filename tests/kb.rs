//! The glue a bot needs, through the public API: a folder indexed into a persisted knowledge
//! base, searched with exact citations, and the hits handed to `MemoryStore::llm_messages` as
//! cited passages within a token budget.

use keel::memory::{ContextPassage, NewMessage, SessionRef};
use keel::rag::KnowledgeBase;
use keel::{Keyring, MemoryOptions, MemoryStore};

#[test]
fn folder_to_cited_llm_messages() {
    let root = std::env::temp_dir().join(format!("keel-kb-glue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let docs = root.join("docs");
    std::fs::create_dir_all(docs.join("guide")).unwrap();
    let wings = "# Wings\n\nThe lift of a wing grows with its angle of attack.\n";
    std::fs::write(docs.join("wings.md"), wings).unwrap();
    std::fs::write(
        docs.join("guide/shells.html"),
        "<title>Shells</title><p>Thin shells buckle under compression.</p>",
    )
    .unwrap();

    let kb = KnowledgeBase::builder()
        .path(root.join("kb"))
        .open()
        .unwrap();
    let report = kb.index_folder(&docs).unwrap();
    assert_eq!((report.added, report.chunks), (2, 2));
    drop(kb);
    let kb = KnowledgeBase::builder()
        .path(root.join("kb"))
        .open()
        .unwrap();
    let hits = kb.search("what makes a wing lift", 2).unwrap();
    assert_eq!(hits[0].doc_id(), "wings.md");
    let span = hits[0].span();
    assert_eq!(&wings[span.byte_start..span.byte_end], hits[0].passage.text);

    let keys = Keyring::generate().unwrap();
    let mem = MemoryStore::open(root.join("m.db"), keys, MemoryOptions::default()).unwrap();
    let at = SessionRef::new("acme", "alice", "s1");
    mem.append(&at, &NewMessage::new("user", "what makes a wing lift?"))
        .unwrap();
    let passages: Vec<ContextPassage> = hits.iter().map(ContextPassage::from).collect();
    let messages = mem
        .llm_messages(&at, 1000, Some("Answer from the sources."), &passages)
        .unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].role, "system");
    // The chunk is the file's text, trimmed: the Markdown heading is part of it.
    assert_eq!(hits[0].passage.text, wings.trim_end());
    assert!(messages[0].content.starts_with(
        "Answer from the sources.\n\nSources:\n[1] Wings (wings.md)\n# Wings\n\nThe lift"
    ));
    assert_eq!(messages[1].content, "what makes a wing lift?");
    std::fs::remove_dir_all(&root).unwrap();
}
