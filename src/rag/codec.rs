//! The one file codec of retrieval's index files (BM25 in [`super::lexical`], dense in
//! [`super::dense`]): header, records, checksum and atomic write, written once for both.
//!
//! Every index file is little-endian and laid out as:
//! - a header: an 8-byte magic naming the kind of index, then a u32 format version;
//! - a body, written with [`Encoder`] and read with [`Decoder`]: fixed-width integers and
//!   floats, strings as a u64 length + UTF-8, and passages in one record layout
//!   ([`Encoder::passage`]: doc id, u32 chunk id, the four u64 span offsets, title, text, metadata
//!   as a JSON object);
//! - a trailer: the CRC-32 of every byte before it (see [`super::checksum`]).
//!
//! Formats: 3 is the layout above, written by both index kinds. Older files keep opening:
//! format 2 is the same except that the dense index wrote string lengths as u32
//! ([`Decoder::u32_string_lengths`]); format 1 is format 2 without the trailer.
//!
//! Invariants: every length read is checked against the bytes left in the file before anything
//! is allocated, so a damaged or foreign file is a `CorruptIndex` error, never a panic or a huge
//! allocation; errors name the file. A save writes a temporary file in the target's directory,
//! fsyncs it, renames it over the target and fsyncs the directory, so a reader (or a crash) sees
//! the old file or the new one, never a torn one.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::checksum::{with_path, HashingReader, HashingWriter, TRAILER};
use super::chunk::Span;
use super::cite::{metadata_from_json, metadata_to_json, Passage};
use super::RagError;

/// The format version every index file is written in.
pub(crate) const VERSION: u32 = 3;
/// The oldest format version still read.
const OLDEST: u32 = 1;
/// The first format version with the checksum trailer.
const CHECKED: u32 = 2;

pub(crate) fn corrupt(what: impl Into<String>) -> RagError {
    RagError::CorruptIndex(what.into())
}

/// Writes the body of an index file.
pub(crate) struct Encoder {
    inner: HashingWriter<BufWriter<File>>,
}

impl Encoder {
    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<(), RagError> {
        Ok(self.inner.write_all(b)?)
    }
    #[cfg_attr(not(feature = "neural"), allow(dead_code))] // the dense index only
    pub(crate) fn u8(&mut self, v: u8) -> Result<(), RagError> {
        self.bytes(&[v])
    }
    pub(crate) fn u32(&mut self, v: u32) -> Result<(), RagError> {
        self.bytes(&v.to_le_bytes())
    }
    pub(crate) fn u64(&mut self, v: u64) -> Result<(), RagError> {
        self.bytes(&v.to_le_bytes())
    }
    pub(crate) fn f32(&mut self, v: f32) -> Result<(), RagError> {
        self.bytes(&v.to_le_bytes())
    }
    pub(crate) fn string(&mut self, s: &str) -> Result<(), RagError> {
        self.u64(s.len() as u64)?;
        self.bytes(s.as_bytes())
    }
    /// The passage record shared by every index file.
    pub(crate) fn passage(&mut self, p: &Passage) -> Result<(), RagError> {
        self.string(&p.doc_id)?;
        self.u32(p.chunk_id)?;
        for o in [
            p.span.byte_start,
            p.span.byte_end,
            p.span.char_start,
            p.span.char_end,
        ] {
            self.u64(o as u64)?;
        }
        self.string(&p.title)?;
        self.string(&p.text)?;
        self.string(&metadata_to_json(&p.metadata))
    }
}

/// A temporary name no other save (in this process or another) uses at the same time.
fn temporary_path(path: &Path) -> Result<std::path::PathBuf, RagError> {
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| RagError::Io("the index path has no file name".into()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SAVES.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp))
}

/// Writes an index file atomically: header (`magic`, [`VERSION`]), the body `write` produces,
/// the checksum trailer; then fsync, rename over `path`, fsync of the directory.
pub(crate) fn save(
    path: &Path,
    magic: &[u8; 8],
    write: impl FnOnce(&mut Encoder) -> Result<(), RagError>,
) -> Result<(), RagError> {
    save_unnamed(path, magic, write).map_err(|e| with_path(path, e))
}

fn save_unnamed(
    path: &Path,
    magic: &[u8; 8],
    write: impl FnOnce(&mut Encoder) -> Result<(), RagError>,
) -> Result<(), RagError> {
    let tmp = temporary_path(path)?;
    let written = (|| -> Result<(), RagError> {
        let mut e = Encoder {
            inner: HashingWriter::new(BufWriter::new(File::create(&tmp)?)),
        };
        e.bytes(magic)?;
        e.u32(VERSION)?;
        write(&mut e)?;
        e.inner
            .finish()?
            .into_inner()
            .map_err(|e| RagError::from(e.into_error()))?
            .sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // The rename is durable once the directory is (best effort: not every platform can open a
    // directory for syncing).
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads the body of an index file.
pub(crate) struct Decoder {
    inner: HashingReader<BufReader<File>>,
    /// Bytes left in the body (the trailer excluded): no length read may exceed this.
    left: u64,
    version: u32,
    u32_strings: bool,
}

impl Decoder {
    /// The file's format version.
    #[cfg_attr(not(feature = "neural"), allow(dead_code))] // the dense index only
    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    /// Reads string lengths as u32 (the dense index before format 3).
    #[cfg_attr(not(feature = "neural"), allow(dead_code))] // the dense index only
    pub(crate) fn u32_string_lengths(&mut self) {
        self.u32_strings = true;
    }

    /// Bytes left in the body.
    #[cfg_attr(not(feature = "neural"), allow(dead_code))] // the dense index only
    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    fn take(&mut self, n: u64) -> Result<(), RagError> {
        if n > self.left {
            return Err(corrupt(
                "unexpected end of file, or a length exceeds the file size",
            ));
        }
        self.left -= n;
        Ok(())
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], RagError> {
        self.take(N as u64)?;
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| corrupt("unexpected end of file"))?;
        Ok(buf)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<Vec<u8>, RagError> {
        self.take(n as u64)?;
        let mut buf = vec![0u8; n];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| corrupt("unexpected end of file"))?;
        Ok(buf)
    }

    #[cfg_attr(not(feature = "neural"), allow(dead_code))] // the dense index only
    pub(crate) fn u8(&mut self) -> Result<u8, RagError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, RagError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, RagError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn f32(&mut self) -> Result<f32, RagError> {
        Ok(f32::from_le_bytes(self.array()?))
    }
    pub(crate) fn usize(&mut self) -> Result<usize, RagError> {
        usize::try_from(self.u64()?).map_err(|_| corrupt("offset out of range"))
    }

    /// A u64 count of items of at least `min_size` bytes each, checked against the bytes left.
    pub(crate) fn count(&mut self, min_size: u64) -> Result<usize, RagError> {
        let n = self.u64()?;
        if n.saturating_mul(min_size) > self.left {
            return Err(corrupt("a length exceeds the file size"));
        }
        usize::try_from(n).map_err(|_| corrupt("a length exceeds the file size"))
    }

    pub(crate) fn string(&mut self) -> Result<String, RagError> {
        let n = if self.u32_strings {
            self.u32()? as usize
        } else {
            self.count(1)?
        };
        String::from_utf8(self.bytes(n)?).map_err(|_| corrupt("invalid UTF-8"))
    }

    /// The passage record written by [`Encoder::passage`].
    pub(crate) fn passage(&mut self) -> Result<Passage, RagError> {
        let doc_id = self.string()?;
        let chunk_id = self.u32()?;
        let span = Span {
            byte_start: self.usize()?,
            byte_end: self.usize()?,
            char_start: self.usize()?,
            char_end: self.usize()?,
        };
        let title = self.string()?;
        let text = self.string()?;
        let metadata =
            metadata_from_json(&self.string()?).map_err(|_| corrupt("bad passage metadata"))?;
        Ok(Passage {
            doc_id,
            chunk_id,
            span,
            title,
            text,
            metadata: Arc::new(metadata),
        })
    }

    /// The body must be fully read; then the checksum (format >= 2) must match.
    fn finish(self) -> Result<(), RagError> {
        if self.left != 0 {
            return Err(corrupt("trailing bytes"));
        }
        if self.version >= CHECKED {
            self.inner.verify_trailer()?;
        }
        Ok(())
    }
}

/// Opens an index file of the kind `magic` names (`kind`, e.g. "BM25 index", for the error),
/// checks its header, lets `read` decode the body, then checks that the body ended and the
/// checksum matches. Errors name the file.
pub(crate) fn load<T>(
    path: &Path,
    magic: &[u8; 8],
    kind: &str,
    read: impl FnOnce(&mut Decoder) -> Result<T, RagError>,
) -> Result<T, RagError> {
    load_unnamed(path, magic, kind, read).map_err(|e| with_path(path, e))
}

fn load_unnamed<T>(
    path: &Path,
    magic: &[u8; 8],
    kind: &str,
    read: impl FnOnce(&mut Decoder) -> Result<T, RagError>,
) -> Result<T, RagError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut d = Decoder {
        inner: HashingReader::new(BufReader::new(file)),
        left: size,
        version: 0,
        u32_strings: false,
    };
    if &d.array::<8>()? != magic {
        return Err(corrupt(format!("not a keel {kind}")));
    }
    d.version = d.u32()?;
    if !(OLDEST..=VERSION).contains(&d.version) {
        return Err(corrupt(format!(
            "format version {} is not supported (this keel reads {OLDEST} to {VERSION})",
            d.version
        )));
    }
    if d.version >= CHECKED {
        d.take(TRAILER)?;
    }
    let value = read(&mut d)?;
    d.finish()?;
    Ok(value)
}
