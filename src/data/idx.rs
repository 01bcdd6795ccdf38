//! A small, strict reader of the IDX format (the format of MNIST and Fashion-MNIST), plain or
//! gzip-compressed.
//!
//! An IDX file is a 4-byte magic `0x00 0x00 <type> <ndim>`, then `ndim` big-endian u32
//! dimensions, then the data in row-major order. Only type `0x08` (unsigned bytes), the type
//! of every MNIST-family file, is accepted. The data must be exactly as long as the dimensions
//! say: a shorter file is truncated, a longer one has trailing bytes, and both are errors.
//! A file that starts with the gzip magic `1f 8b` is decompressed first (flate2).

use std::io::Read;
use std::path::Path;

use crate::bail;
use crate::error::{Error, Result};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first (for images: count, rows, columns).
    pub dims: Vec<usize>,
    /// The data, row-major.
    pub data: Vec<u8>,
}

/// The largest array accepted, in bytes (a header claiming more is refused before allocating).
const MAX_BYTES: u64 = 1 << 34;

/// Parses the bytes of an IDX file named `name` (for messages). Gzip is detected by its magic.
/// Any byte string gives an array or a one-line error, never a panic.
pub fn parse(bytes: &[u8], name: &str) -> Result<Idx> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_BYTES + 1024)
            .read_to_end(&mut out)
            .map_err(|e| Error::new(format!("{name}: cannot decompress (corrupt or truncated gzip): {e}")))?;
        return parse_plain(&out, name);
    }
    parse_plain(bytes, name)
}

fn parse_plain(bytes: &[u8], name: &str) -> Result<Idx> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        bail!("{name}: not an IDX file (the magic number must start with two zero bytes)");
    }
    if bytes[2] != 0x08 {
        bail!("{name}: IDX data type 0x{:02x} is not supported (only 0x08, unsigned bytes, as in MNIST)", bytes[2]);
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        bail!("{name}: IDX file with zero dimensions");
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        bail!("{name}: truncated IDX header ({} bytes, {ndim} dimensions need {header})", bytes.len());
    }
    let dims: Vec<usize> = bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let len = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).filter(|&n| n <= MAX_BYTES);
    let Some(len) = len else {
        bail!("{name}: IDX dimensions {dims:?} are too large");
    };
    let have = (bytes.len() - header) as u64;
    if have < len {
        bail!("{name}: truncated IDX file: dimensions {dims:?} need {len} data bytes, the file has {have}");
    }
    if have > len {
        bail!("{name}: IDX file has {} trailing bytes after the {len} its dimensions {dims:?} need", have - len);
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

/// Reads an IDX file, plain or gzipped.
pub fn read(path: &Path) -> Result<Idx> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::new(format!("{name}: cannot read: {e}")))?;
    parse(&bytes, &name)
}

/// The bytes of an IDX file of unsigned bytes (for tests and for writing small datasets).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_valid_files_plain_and_gzipped() {
        // Two 2 x 3 images, written byte by byte as the format specifies.
        let mut raw = vec![0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        raw.extend(0u8..12);
        for bytes in [raw.clone(), gzip(&raw)] {
            let a = parse(&bytes, "t").unwrap();
            assert_eq!(a.dims, vec![2, 2, 3]);
            assert_eq!(a.data, (0u8..12).collect::<Vec<_>>());
        }
        let labels = parse(&[0, 0, 8, 1, 0, 0, 1, 0x2c].iter().copied().chain(std::iter::repeat_n(7u8, 300)).collect::<Vec<_>>(), "l").unwrap();
        assert_eq!(labels.dims, vec![300]);
        assert_eq!(encode(&[2, 2, 3], &(0u8..12).collect::<Vec<_>>()), raw);
    }

    #[test]
    fn rejects_malformed_files_with_one_line() {
        let ok = encode(&[2, 2], &[1, 2, 3, 4]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "not an IDX file"),
            (vec![1, 0, 8, 1, 0, 0, 0, 0], "not an IDX file"),
            (vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0], "data type 0x0d"),
            (vec![0, 0, 8, 0], "zero dimensions"),
            (vec![0, 0, 8, 2, 0, 0, 0, 2], "truncated IDX header"),
            (ok[..ok.len() - 1].to_vec(), "truncated IDX file"),
            ([ok.clone(), vec![9]].concat(), "1 trailing bytes"),
            (vec![0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "too large"),
            (gzip(&ok)[..12].to_vec(), "cannot decompress"),
        ];
        for (bytes, want) in cases {
            let e = parse(&bytes, "f.idx").unwrap_err().to_string();
            assert!(e.starts_with("f.idx: ") && e.contains(want) && !e.contains('\n'), "{e} (want {want})");
        }
        // A gzipped truncated file is caught after decompression.
        let e = parse(&gzip(&ok[..ok.len() - 2]), "g").unwrap_err().to_string();
        assert!(e.contains("truncated IDX file"), "{e}");
    }
}
