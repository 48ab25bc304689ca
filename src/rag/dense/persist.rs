//! The dense index file: passages and vectors in one little-endian binary file.
//!
//! Layout: magic `KEELDNS1`, u32 format version, u32 dim, u8 precision (0 f32, 1 int8), u64
//! rows; then per row the passage (doc id, chunk id, four span offsets, title, text, metadata
//! as JSON; strings as u32 length + UTF-8); then the matrix (`rows × dim` f32, or `rows × dim`
//! i8 followed by `rows` f32 scales); format 2 (written since checksums were added) ends with a
//! CRC-32 of every byte before it (see [`crate::rag::checksum`]), so any damaged byte makes the
//! file fail to open with `CorruptIndex` naming it; format 1 (no checksum) is still read. Every
//! length is checked against the bytes left before anything is allocated. Written to a temporary
//! file and renamed over the target, so a crash leaves the old file or the new one, never a torn
//! one.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::{Arc, RwLock};

use super::{DenseIndex, Precision, Store};
use crate::rag::checksum::{with_path, HashingReader, HashingWriter, TRAILER};
use crate::rag::chunk::Span;
use crate::rag::cite::{metadata_from_json, metadata_to_json, Passage};
use crate::rag::embed::Embedder;
use crate::rag::RagError;

const MAGIC: &[u8; 8] = b"KEELDNS1";
/// The version written.
const VERSION: u32 = 2;
/// The version before the checksum, still read.
const VERSION_UNCHECKED: u32 = 1;
/// The largest dimension an index accepts (the file stores it as a u32).
pub(crate) const MAX_DIM: usize = 1 << 16;

fn corrupt(what: &str) -> RagError {
    RagError::CorruptIndex(format!("dense index: {what}"))
}

fn put_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

struct Reader<R: Read> {
    inner: R,
    /// Bytes left in the file (before the checksum): no length read may exceed this.
    left: u64,
}

impl<R: Read> Reader<R> {
    fn take(&mut self, n: usize) -> Result<(), RagError> {
        if n as u64 > self.left {
            return Err(corrupt("truncated file, or a length exceeds the file size"));
        }
        self.left -= n as u64;
        Ok(())
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], RagError> {
        self.take(N)?;
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|_| corrupt("truncated file"))?;
        Ok(b)
    }
    fn vec(&mut self, n: usize) -> Result<Vec<u8>, RagError> {
        self.take(n)?;
        let mut b = vec![0u8; n];
        self.inner
            .read_exact(&mut b)
            .map_err(|_| corrupt("truncated file"))?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, RagError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, RagError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn usize(&mut self) -> Result<usize, RagError> {
        usize::try_from(self.u64()?).map_err(|_| corrupt("offset out of range"))
    }
    fn string(&mut self) -> Result<String, RagError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.vec(n)?).map_err(|_| corrupt("invalid UTF-8"))
    }
}

impl DenseIndex {
    /// Writes the index (passages and vectors) to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<(), RagError> {
        let _span = tracing::info_span!("rag.dense.save").entered();
        self.save_unnamed(path).map_err(|e| with_path(path, e))
    }

    fn save_unnamed(&self, path: &Path) -> Result<(), RagError> {
        let store = self.read();
        let tmp = path.with_extension("tmp-keel");
        let written = (|| -> Result<(), RagError> {
            let mut w = HashingWriter::new(BufWriter::new(std::fs::File::create(&tmp)?));
            w.write_all(MAGIC)?;
            w.write_all(&VERSION.to_le_bytes())?;
            w.write_all(&(self.dim as u32).to_le_bytes())?;
            w.write_all(&[u8::from(self.precision == Precision::Int8)])?;
            w.write_all(&(store.len() as u64).to_le_bytes())?;
            for p in &store.passages {
                put_str(&mut w, &p.doc_id)?;
                w.write_all(&p.chunk_id.to_le_bytes())?;
                for o in [
                    p.span.byte_start,
                    p.span.byte_end,
                    p.span.char_start,
                    p.span.char_end,
                ] {
                    w.write_all(&(o as u64).to_le_bytes())?;
                }
                put_str(&mut w, &p.title)?;
                put_str(&mut w, &p.text)?;
                put_str(&mut w, &metadata_to_json(&p.metadata))?;
            }
            for x in &store.f32s {
                w.write_all(&x.to_le_bytes())?;
            }
            let bytes: Vec<u8> = store.i8s.iter().map(|&x| x as u8).collect();
            w.write_all(&bytes)?;
            for x in &store.scales {
                w.write_all(&x.to_le_bytes())?;
            }
            w.finish()?
                .into_inner()
                .map_err(|e| RagError::from(e.into_error()))?
                .sync_all()?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Reads an index written by [`DenseIndex::save`]; `embedder` (for text search) must have the
    /// file's dimension.
    pub fn open(path: &Path, embedder: Option<Arc<Embedder>>) -> Result<Self, RagError> {
        let _span = tracing::info_span!("rag.dense.open").entered();
        let this = Self::open_unnamed(path, embedder).map_err(|e| with_path(path, e))?;
        // Checked once the whole file has been verified, so damage is reported as damage.
        if let Some(e) = &this.embedder {
            if e.dim() != this.dim {
                return Err(RagError::InvalidConfig(format!(
                    "the index {} has dimension {} but the embedder produces {}",
                    path.display(),
                    this.dim,
                    e.dim()
                )));
            }
        }
        Ok(this)
    }

    fn open_unnamed(path: &Path, embedder: Option<Arc<Embedder>>) -> Result<Self, RagError> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let mut r = Reader {
            inner: HashingReader::new(BufReader::new(file)),
            left: size,
        };
        if &r.bytes::<8>()? != MAGIC {
            return Err(corrupt("not a keel dense index"));
        }
        let version = r.u32()?;
        match version {
            VERSION => r.take(TRAILER as usize)?,
            VERSION_UNCHECKED => {}
            _ => {
                return Err(corrupt(&format!(
                    "format version {version} is not supported (this keel reads \
                     {VERSION_UNCHECKED} and {VERSION})"
                )))
            }
        }
        let dim = r.u32()? as usize;
        let precision = match r.bytes::<1>()?[0] {
            0 => Precision::F32,
            1 => Precision::Int8,
            _ => return Err(corrupt("unknown precision")),
        };
        if dim == 0 || dim > MAX_DIM {
            return Err(corrupt(&format!("dimension {dim} out of range")));
        }
        let rows = r.usize()?;
        let mut store = Store::default();
        for _ in 0..rows {
            let doc_id = r.string()?;
            let chunk_id = r.u32()?;
            let span = Span {
                byte_start: r.usize()?,
                byte_end: r.usize()?,
                char_start: r.usize()?,
                char_end: r.usize()?,
            };
            let title = r.string()?;
            let text = r.string()?;
            let metadata = metadata_from_json(&r.string()?)
                .map_err(|_| corrupt("invalid passage metadata"))?;
            store.passages.push(Arc::new(Passage {
                doc_id,
                chunk_id,
                span,
                title,
                text,
                metadata: Arc::new(metadata),
            }));
        }
        let cells = rows
            .checked_mul(dim)
            .ok_or_else(|| corrupt("size out of range"))?;
        let expected = match precision {
            Precision::F32 => cells.checked_mul(4),
            Precision::Int8 => rows.checked_mul(4).and_then(|r| r.checked_add(cells)),
        }
        .ok_or_else(|| corrupt("size out of range"))?;
        if expected as u64 != r.left {
            return Err(corrupt("vector block has the wrong size"));
        }
        let buf = r.vec(expected)?;
        if version == VERSION {
            r.inner.verify_trailer()?;
        }
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        match precision {
            Precision::F32 => store.f32s = f32s(&buf),
            Precision::Int8 => {
                store.i8s = buf[..cells].iter().map(|&b| b as i8).collect();
                store.scales = f32s(&buf[cells..]);
            }
        }
        Ok(Self {
            embedder,
            dim,
            precision,
            store: RwLock::new(store),
        })
    }
}
