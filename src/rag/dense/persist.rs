//! The dense index file, in the shared index-file codec ([`crate::rag::codec`]: header, passage
//! records, checksum trailer, atomic write).
//!
//! Body: u32 dim, u8 precision (0 f32, 1 int8), u64 rows; then each row's passage (the codec's
//! passage record); then the matrix (`rows × dim` f32, or `rows × dim` i8 followed by `rows` f32
//! scales). Formats 1 and 2 (before the shared codec) wrote the passages' string lengths as u32,
//! and are still read.

use std::path::Path;
use std::sync::{Arc, RwLock};

use super::{DenseIndex, Precision, Store};
use crate::rag::codec::{self, corrupt};
use crate::rag::embed::Embedder;
use crate::rag::RagError;

const MAGIC: &[u8; 8] = b"KEELDNS1";
/// The largest dimension an index accepts (the file stores it as a u32).
pub(crate) const MAX_DIM: usize = 1 << 16;

impl DenseIndex {
    /// Writes the index (passages and vectors) to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<(), RagError> {
        let _span = tracing::info_span!("rag.dense.save").entered();
        let store = self.read();
        codec::save(path, MAGIC, |w| {
            w.u32(self.dim as u32)?;
            w.u8(u8::from(self.precision == Precision::Int8))?;
            w.u64(store.len() as u64)?;
            for p in &store.passages {
                w.passage(p)?;
            }
            for x in &store.f32s {
                w.f32(*x)?;
            }
            let bytes: Vec<u8> = store.i8s.iter().map(|&x| x as u8).collect();
            w.bytes(&bytes)?;
            for x in &store.scales {
                w.f32(*x)?;
            }
            Ok(())
        })
    }

    /// Reads an index written by [`DenseIndex::save`]; `embedder` (for text search) must have the
    /// file's dimension.
    pub fn open(path: &Path, embedder: Option<Arc<Embedder>>) -> Result<Self, RagError> {
        let _span = tracing::info_span!("rag.dense.open").entered();
        let (dim, precision, store) = codec::load(path, MAGIC, "dense index", read_body)?;
        // Checked once the whole file has been verified, so damage is reported as damage.
        if let Some(e) = &embedder {
            if e.dim() != dim {
                return Err(RagError::InvalidConfig(format!(
                    "the index {} has dimension {dim} but the embedder produces {}",
                    path.display(),
                    e.dim()
                )));
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

fn read_body(r: &mut codec::Decoder) -> Result<(usize, Precision, Store), RagError> {
    if r.version() < 3 {
        r.u32_string_lengths();
    }
    let dim = r.u32()? as usize;
    let precision = match r.u8()? {
        0 => Precision::F32,
        1 => Precision::Int8,
        _ => return Err(corrupt("unknown precision")),
    };
    if dim == 0 || dim > MAX_DIM {
        return Err(corrupt(format!("dimension {dim} out of range")));
    }
    let rows = r.usize()?;
    let mut store = Store::default();
    for _ in 0..rows {
        store.passages.push(Arc::new(r.passage()?));
    }
    let cells = rows
        .checked_mul(dim)
        .ok_or_else(|| corrupt("size out of range"))?;
    let expected = match precision {
        Precision::F32 => cells.checked_mul(4),
        Precision::Int8 => rows.checked_mul(4).and_then(|r| r.checked_add(cells)),
    }
    .ok_or_else(|| corrupt("size out of range"))?;
    if expected as u64 != r.left() {
        return Err(corrupt("vector block has the wrong size"));
    }
    let buf = r.bytes(expected)?;
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
    Ok((dim, precision, store))
}
