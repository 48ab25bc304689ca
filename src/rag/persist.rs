//! The on-disk format of a BM25 index, versioned, written atomically.
//!
//! Layout (little-endian): magic `KEELBM25`, format version u32, the settings (k1, b, language,
//! stemming, stopwords), the vocabulary (term strings by id), then each live passage with its
//! analysed term counts; format 2 (written since checksums were added) ends with a CRC-32 of
//! every byte before it (see [`super::checksum`]), format 1 has no checksum and is still read.
//! Postings are rebuilt on open from the term counts, which is linear and needs no re-analysis.
//! Every length and id is checked on read, so a damaged or foreign file is a `CorruptIndex` error
//! naming the file, never a panic or a huge allocation; in format 2 any damaged byte is.
//!
//! Writes go to a temporary file in the same directory, are flushed to disk, then renamed over
//! the target, so a reader sees the old index or the new one, never a torn file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::analyzer::AnalyzerConfig;
use super::checksum::{with_path, HashingReader, HashingWriter, TRAILER};
use super::chunk::Span;
use super::cite::{Metadata, Passage};
use super::lexical::{Bm25Config, Inner};
use super::RagError;

const MAGIC: &[u8; 8] = b"KEELBM25";
/// The version written.
const VERSION: u32 = 2;
/// The version before the checksum, still read.
const VERSION_UNCHECKED: u32 = 1;

struct W<T: Write>(T);

impl<T: Write> W<T> {
    fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.0.write_all(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.0.write_all(&v.to_le_bytes())
    }
    fn f32(&mut self, v: f32) -> std::io::Result<()> {
        self.0.write_all(&v.to_le_bytes())
    }
    fn str(&mut self, s: &str) -> std::io::Result<()> {
        self.u64(s.len() as u64)?;
        self.0.write_all(s.as_bytes())
    }
}

fn corrupt(what: &str) -> RagError {
    RagError::CorruptIndex(what.to_owned())
}

struct R<T: Read> {
    inner: T,
    /// Bytes left in the file: no length read from it may exceed this.
    left: u64,
}

impl<T: Read> R<T> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], RagError> {
        let mut buf = [0u8; N];
        if N as u64 > self.left {
            return Err(corrupt("unexpected end of file"));
        }
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| corrupt("unexpected end of file"))?;
        self.left -= N as u64;
        Ok(buf)
    }
    fn u32(&mut self) -> Result<u32, RagError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, RagError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn f32(&mut self) -> Result<f32, RagError> {
        Ok(f32::from_le_bytes(self.bytes()?))
    }
    fn usize(&mut self) -> Result<usize, RagError> {
        usize::try_from(self.u64()?).map_err(|_| corrupt("offset out of range"))
    }
    /// A count of items of at least `min_size` bytes each, checked against the bytes left.
    fn count(&mut self, min_size: u64) -> Result<usize, RagError> {
        let n = self.u64()?;
        if n.saturating_mul(min_size) > self.left {
            return Err(corrupt("a length exceeds the file size"));
        }
        Ok(n as usize)
    }
    fn str(&mut self) -> Result<String, RagError> {
        let n = self.count(1)?;
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| corrupt("unexpected end of file"))?;
        self.left -= n as u64;
        String::from_utf8(buf).map_err(|_| corrupt("invalid UTF-8"))
    }
}

pub(crate) fn save(path: &Path, config: &Bm25Config, inner: &Inner) -> Result<(), RagError> {
    save_unnamed(path, config, inner).map_err(|e| with_path(path, e))
}

fn save_unnamed(path: &Path, config: &Bm25Config, inner: &Inner) -> Result<(), RagError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| RagError::Io("the index path has no file name".into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| -> Result<(), RagError> {
        let file = File::create(&tmp)?;
        let mut w = W(HashingWriter::new(BufWriter::new(file)));
        w.0.write_all(MAGIC)?;
        w.u32(VERSION)?;
        w.f32(config.k1)?;
        w.f32(config.b)?;
        w.str(&config.analyzer.language)?;
        w.u32(u32::from(config.analyzer.stemming))?;
        w.u32(u32::from(config.analyzer.stopwords))?;
        w.u64(inner.terms.len() as u64)?;
        for t in &inner.terms {
            w.str(t)?;
        }
        w.u64(inner.live as u64)?;
        for slot in inner.slots.iter().flatten() {
            let p = &slot.passage;
            w.str(&p.doc_id)?;
            w.u32(p.chunk_id)?;
            for v in [
                p.span.byte_start,
                p.span.byte_end,
                p.span.char_start,
                p.span.char_end,
            ] {
                w.u64(v as u64)?;
            }
            w.str(&p.title)?;
            w.str(&p.text)?;
            w.str(&serde_json::Value::Object((*p.metadata).clone()).to_string())?;
            let len: u64 = slot.terms.iter().map(|&(_, tf)| u64::from(tf)).sum();
            w.u64(len)?;
            w.u64(slot.terms.len() as u64)?;
            for &(t, tf) in &slot.terms {
                w.u32(t)?;
                w.u32(tf)?;
            }
        }
        let file =
            w.0.finish()?
                .into_inner()
                .map_err(|e| RagError::from(e.into_error()))?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn load(path: &Path) -> Result<(Bm25Config, Inner), RagError> {
    load_unnamed(path).map_err(|e| with_path(path, e))
}

fn load_unnamed(path: &Path) -> Result<(Bm25Config, Inner), RagError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = R {
        inner: HashingReader::new(BufReader::new(file)),
        left: size,
    };
    if &r.bytes::<8>()? != MAGIC {
        return Err(corrupt("not a keel BM25 index"));
    }
    let version = r.u32()?;
    match version {
        VERSION if r.left >= TRAILER => r.left -= TRAILER,
        VERSION => return Err(corrupt("unexpected end of file")),
        VERSION_UNCHECKED => {}
        _ => {
            return Err(RagError::CorruptIndex(format!(
                "format version {version} is not supported (this keel reads {VERSION_UNCHECKED} and {VERSION})"
            )))
        }
    }
    let k1 = r.f32()?;
    let b = r.f32()?;
    let language = r.str()?;
    let stemming = r.u32()? != 0;
    let stopwords = r.u32()? != 0;
    let config = Bm25Config {
        k1,
        b,
        analyzer: AnalyzerConfig {
            language,
            stemming,
            stopwords,
        },
    };
    let mut inner = Inner::default();
    let n_terms = r.count(8)?;
    for id in 0..n_terms {
        let t = r.str()?;
        if inner.vocab.insert(t.clone(), id as u32).is_some() {
            return Err(corrupt("duplicate term"));
        }
        inner.terms.push(t);
    }
    inner.postings = vec![Vec::new(); n_terms];
    inner.df = vec![0; n_terms];
    let n_passages = r.count(8)?;
    for _ in 0..n_passages {
        let doc_id = r.str()?;
        let chunk_id = r.u32()?;
        let span = Span {
            byte_start: r.usize()?,
            byte_end: r.usize()?,
            char_start: r.usize()?,
            char_end: r.usize()?,
        };
        let title = r.str()?;
        let text = r.str()?;
        let metadata: Metadata =
            serde_json::from_str(&r.str()?).map_err(|_| corrupt("bad metadata"))?;
        let len = r.usize()?;
        let n = r.count(8)?;
        let mut terms = Vec::with_capacity(n);
        let mut sum = 0usize;
        let mut prev = None;
        for _ in 0..n {
            let t = r.u32()?;
            let tf = r.u32()?;
            if t as usize >= n_terms || tf == 0 || prev.is_some_and(|p| p >= t) {
                return Err(corrupt("bad term entry"));
            }
            prev = Some(t);
            sum += tf as usize;
            terms.push((t, tf));
        }
        if sum != len {
            return Err(corrupt("passage length mismatch"));
        }
        if inner.by_doc.get(&doc_id).is_some_and(|s| {
            s.iter().any(|&x| {
                inner.slots[x as usize]
                    .as_ref()
                    .is_some_and(|y| y.passage.chunk_id == chunk_id)
            })
        }) {
            return Err(corrupt("duplicate passage"));
        }
        let passage = Passage {
            doc_id,
            chunk_id,
            span,
            title,
            text,
            metadata: Arc::new(metadata),
        };
        inner.place(Arc::new(passage), terms, len);
    }
    if r.left != 0 {
        return Err(corrupt("trailing bytes"));
    }
    if version == VERSION {
        r.inner.verify_trailer()?;
    }
    Ok((config, inner))
}
