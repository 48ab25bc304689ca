//! Whole-file checksums for index files, and the path-naming of their errors.
//!
//! Index files (format 2 on, written by [`super::codec`]) end with a CRC-32 (IEEE, `crc32fast`) of every byte before it,
//! magic and version included. CRC-32 detects every error burst of up to 32 bits, so any single
//! damaged byte (and most larger damage) makes the file fail to open with
//! [`RagError::CorruptIndex`] instead of loading different data. It guards against accidents
//! (bad disks, truncated copies, stray writes), not against someone who rewrites the file on
//! purpose: they can recompute the checksum.
//!
//! Readers and writers hash the bytes as they stream through, so neither holds the file in
//! memory twice.

use std::io::{Read, Write};
use std::path::Path;

use super::RagError;

/// Bytes of the trailing checksum.
pub(crate) const TRAILER: u64 = 4;

/// A reader that hashes every byte it hands out.
pub(crate) struct HashingReader<R: Read> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    /// Reads the trailing checksum (not hashed) and compares it with the hash of everything read
    /// so far; then the file must end.
    pub(crate) fn verify_trailer(mut self) -> Result<(), RagError> {
        let expected = self.hasher.clone().finalize();
        let mut stored = [0u8; TRAILER as usize];
        self.inner.read_exact(&mut stored).map_err(|_| {
            RagError::CorruptIndex("the checksum is missing (truncated file)".into())
        })?;
        if u32::from_le_bytes(stored) != expected {
            return Err(RagError::CorruptIndex(
                "checksum mismatch: the file is damaged".into(),
            ));
        }
        let mut extra = [0u8; 1];
        match self.inner.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err(RagError::CorruptIndex("trailing bytes".into())),
            Err(e) => Err(e.into()),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes every byte it writes.
pub(crate) struct HashingWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    /// Appends the checksum of everything written and returns the inner writer.
    pub(crate) fn finish(mut self) -> std::io::Result<W> {
        let sum = self.hasher.clone().finalize();
        self.inner.write_all(&sum.to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Names `path` in an I/O or corruption error of an index file (the other errors pass through).
pub(crate) fn with_path(path: &Path, err: RagError) -> RagError {
    match err {
        RagError::Io(what) => RagError::Io(format!("{}: {what}", path.display())),
        RagError::CorruptIndex(what) => {
            RagError::CorruptIndex(format!("{}: {what}", path.display()))
        }
        other => other,
    }
}
