//! What retrieval returns: passages (a document or one chunk of it) and hits that cite them.
//!
//! A [`Passage`] is the unit every retriever indexes: a document's chunk with its exact offsets
//! into the document, plus the document's title and metadata. A [`Hit`] is a passage that a
//! search returned, with its final score and the rank and score each retriever gave it, so an
//! answer can cite `doc_id` at `span` and explain why the passage was chosen.

use std::sync::Arc;

use super::chunk::Span;

/// Document metadata: a JSON object.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// A document to index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    /// Unique id of the document.
    pub id: String,
    /// Title (searched along with the text; may be empty).
    pub title: String,
    /// Body text.
    pub text: String,
    /// Arbitrary metadata, for filters and citations.
    pub metadata: Metadata,
}

impl Document {
    /// A document with no title and no metadata.
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            text: text.into(),
            ..Self::default()
        }
    }
}

/// One indexed unit: a chunk of a document (or the whole document, chunk 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    /// The document's id.
    pub doc_id: String,
    /// The chunk's position in its document, from 0.
    pub chunk_id: u32,
    /// Offsets of `text` in the document's text.
    pub span: Span,
    /// The document's title.
    pub title: String,
    /// The chunk's text: `document.text[span.byte_start..span.byte_end]`.
    pub text: String,
    /// The document's metadata.
    pub metadata: Arc<Metadata>,
}

impl Passage {
    /// A whole document as a single passage (chunk 0).
    pub fn whole(doc: Document) -> Self {
        Self {
            span: Span::whole(&doc.text),
            doc_id: doc.id,
            chunk_id: 0,
            title: doc.title,
            text: doc.text,
            metadata: Arc::new(doc.metadata),
        }
    }
}

/// One retriever's result: a passage and that retriever's score for it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The passage.
    pub passage: Arc<Passage>,
    /// The retriever's score (higher is better).
    pub score: f32,
}

/// How one retriever ranked a hit.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRank {
    /// The retriever's name (e.g. "bm25").
    pub retriever: Arc<str>,
    /// 1-based rank in that retriever's list.
    pub rank: usize,
    /// That retriever's score.
    pub score: f32,
}

/// A search result with everything needed to cite it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The passage: document id, chunk id, offsets, title, text, metadata.
    pub passage: Arc<Passage>,
    /// The final score (after fusion and reranking; higher is better).
    pub score: f64,
    /// The rank and score each retriever gave this passage (absent retrievers are left out).
    pub sources: Vec<SourceRank>,
}

impl Hit {
    /// The document id.
    pub fn doc_id(&self) -> &str {
        &self.passage.doc_id
    }

    /// The chunk id.
    pub fn chunk_id(&self) -> u32 {
        self.passage.chunk_id
    }

    /// The offsets in the document.
    pub fn span(&self) -> Span {
        self.passage.span
    }
}

/// One retriever's candidates (best first) as citable hits: each hit's score is the candidate's,
/// and its one source is `retriever` at the candidate's 1-based rank. Every front door turns a
/// retriever's list into hits with this, so BM25 and dense hits look the same everywhere.
pub fn hits_from_candidates(retriever: &str, candidates: Vec<Candidate>) -> Vec<Hit> {
    let name: Arc<str> = Arc::from(retriever);
    candidates
        .into_iter()
        .enumerate()
        .map(|(i, c)| Hit {
            score: f64::from(c.score),
            sources: vec![SourceRank {
                retriever: Arc::clone(&name),
                rank: i + 1,
                score: c.score,
            }],
            passage: c.passage,
        })
        .collect()
}

/// Parses metadata from JSON text, which must be an object (or empty, for no metadata).
pub fn metadata_from_json(json: &str) -> Result<Metadata, super::RagError> {
    if json.trim().is_empty() {
        return Ok(Metadata::new());
    }
    match serde_json::from_str(json) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(super::RagError::InvalidMetadata(
            "metadata must be a JSON object".into(),
        )),
        Err(e) => Err(super::RagError::InvalidMetadata(format!(
            "metadata is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))),
    }
}

/// Metadata as compact JSON text.
pub fn metadata_to_json(metadata: &Metadata) -> String {
    // Serialising a map of JSON values cannot fail.
    serde_json::to_string(metadata).unwrap_or_else(|_| "{}".into())
}
