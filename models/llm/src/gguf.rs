//! Bounded reading of a GGUF file's header.
//!
//! [`scan`] walks the header (metadata and tensor table) without keeping anything, checking every
//! declared count and length against [`LoadLimits`] and against the bytes left in the file before
//! reading on, and checks that every tensor's data lies inside the file. Only a file that passes
//! is parsed by candle (`gguf_file::Content::read`), so candle never sizes an allocation from a
//! number the scan has not bounded.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::{GgmlDType, gguf_file};

use crate::LlmError;

/// Bounds on what a model file may declare, checked before anything is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadLimits {
    /// Largest file. Default 8 GiB.
    pub max_file_bytes: u64,
    /// Most metadata entries. Default 4,096.
    pub max_metadata_entries: u64,
    /// Longest string (a key, a token, a chat template). Default 1 MiB.
    pub max_string_bytes: u64,
    /// Most elements in one metadata array (tokens, merges). Default 1,000,000.
    pub max_array_len: u64,
    /// Most tensors. Default 4,096.
    pub max_tensors: u64,
    /// Largest vocabulary. Default 300,000.
    pub max_vocab: usize,
    /// Largest context window served; a model declaring more is capped to it. Default 4,096,
    /// the size of candle's rotary-embedding table (`quantized_llama::MAX_SEQ_LEN`).
    pub max_context: usize,
}

impl Default for LoadLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 8 << 30,
            max_metadata_entries: 4096,
            max_string_bytes: 1 << 20,
            max_array_len: 1_000_000,
            max_tensors: 4096,
            max_vocab: 300_000,
            max_context: candle_transformers::models::quantized_llama::MAX_SEQ_LEN,
        }
    }
}

/// Arrays nest at most this deep (GGUF files in the wild nest none).
const MAX_DEPTH: usize = 2;
/// Most dimensions of a tensor (ggml's GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;
/// Alignment of the tensor data when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;

/// What the scan learned: enough to cross-check candle's parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSummary {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Metadata entries.
    pub metadata_entries: u64,
    /// Tensors.
    pub tensors: u64,
    /// Where tensor data begins.
    pub data_offset: u64,
}

struct Scanner<R> {
    reader: R,
    pos: u64,
    file_size: u64,
    limits: LoadLimits,
}

fn over(what: impl Into<String>, value: u64, limit: u64) -> LlmError {
    LlmError::OverLimit {
        what: what.into(),
        value,
        limit,
    }
}

impl<R: Read + Seek> Scanner<R> {
    fn remaining(&self) -> u64 {
        self.file_size.saturating_sub(self.pos)
    }

    fn need(&self, bytes: u64, what: &str) -> Result<(), LlmError> {
        if bytes > self.remaining() {
            return Err(LlmError::Malformed(format!(
                "{what} needs {bytes} bytes at offset {}, the file has {} left (truncated?)",
                self.pos,
                self.remaining()
            )));
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], LlmError> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| LlmError::Malformed(format!("{what}: {e}")))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, LlmError> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, LlmError> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }

    fn skip(&mut self, bytes: u64, what: &str) -> Result<(), LlmError> {
        self.need(bytes, what)?;
        let offset =
            i64::try_from(bytes).map_err(|_| LlmError::Malformed(format!("{what}: offset")))?;
        self.reader
            .seek(SeekFrom::Current(offset))
            .map_err(|e| LlmError::Malformed(format!("{what}: {e}")))?;
        self.pos += bytes;
        Ok(())
    }

    /// A length-prefixed string, returned only when `keep` (keys are kept, values skipped).
    fn string(&mut self, what: &str, keep: bool) -> Result<Option<String>, LlmError> {
        let len = self.u64(what)?;
        if len > self.limits.max_string_bytes {
            return Err(over(
                format!("{what} length"),
                len,
                self.limits.max_string_bytes,
            ));
        }
        if !keep {
            self.skip(len, what)?;
            return Ok(None);
        }
        self.need(len, what)?;
        let mut buf = vec![0u8; len as usize];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| LlmError::Malformed(format!("{what}: {e}")))?;
        self.pos += len;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Skips one value of GGUF type `ty`; returns it as a number when it is a scalar integer.
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Option<u64>, LlmError> {
        match ty {
            0 | 1 | 7 => {
                let [b] = self.bytes::<1>(key)?;
                if ty == 7 && b > 1 {
                    return Err(LlmError::Malformed(format!("{key}: bool value {b}")));
                }
                Ok(Some(u64::from(b)))
            }
            2 | 3 => Ok(Some(u64::from(u16::from_le_bytes(self.bytes::<2>(key)?)))),
            4 | 5 => Ok(Some(u64::from(self.u32(key)?))),
            6 => self.skip(4, key).map(|()| None),
            10 | 11 => Ok(Some(self.u64(key)?)),
            12 => self.skip(8, key).map(|()| None),
            8 => self.string(key, false).map(|_| None),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(LlmError::Malformed(format!(
                        "{key}: arrays nested deeper than {MAX_DEPTH}"
                    )));
                }
                let elem = self.u32(key)?;
                let len = self.u64(key)?;
                if len > self.limits.max_array_len {
                    return Err(over(
                        format!("array {key} length"),
                        len,
                        self.limits.max_array_len,
                    ));
                }
                let size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 => 8,  // at least the length prefix
                    9 => 12, // at least type + length
                    other => {
                        return Err(LlmError::Malformed(format!(
                            "{key}: unknown value type {other}"
                        )));
                    }
                };
                self.need(len.saturating_mul(size), key)?;
                match elem {
                    7..=9 => {
                        for _ in 0..len {
                            self.value(elem, key, depth + 1)?;
                        }
                    }
                    _ => self.skip(len * size, key)?,
                }
                Ok(None)
            }
            other => Err(LlmError::Malformed(format!(
                "{key}: unknown value type {other}"
            ))),
        }
    }
}

/// The ggml type ids candle reads (`GgmlDType::from_u32` is crate-private there).
fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Walks the header of the GGUF file at `path` within `limits`.
pub fn scan(path: &Path, limits: &LoadLimits) -> Result<HeaderSummary, LlmError> {
    let io = |source| LlmError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let file_size = file.metadata().map_err(io)?.len();
    if file_size > limits.max_file_bytes {
        return Err(over("file size", file_size, limits.max_file_bytes));
    }
    let mut s = Scanner {
        reader: BufReader::new(file),
        pos: 0,
        file_size,
        limits: limits.clone(),
    };
    let magic = s.bytes::<4>("magic")?;
    if &magic != b"GGUF" {
        return Err(LlmError::Malformed(format!(
            "magic is {magic:02x?}, not \"GGUF\""
        )));
    }
    let version = s.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(LlmError::Unsupported(format!(
            "GGUF version {version} (2 and 3 are read)"
        )));
    }
    let tensors = s.u64("tensor count")?;
    if tensors > limits.max_tensors {
        return Err(over("tensor count", tensors, limits.max_tensors));
    }
    let metadata_entries = s.u64("metadata entry count")?;
    if metadata_entries > limits.max_metadata_entries {
        return Err(over(
            "metadata entry count",
            metadata_entries,
            limits.max_metadata_entries,
        ));
    }
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..metadata_entries {
        let key = s.string("metadata key", true)?.unwrap_or_default();
        let ty = s.u32(&key)?;
        let value = s.value(ty, &key, 0)?;
        if key == "general.alignment" {
            alignment = match value {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(LlmError::Malformed(format!("general.alignment {value:?}"))),
            };
        }
    }
    let mut extents = Vec::new();
    for _ in 0..tensors {
        let name = s.string("tensor name", true)?.unwrap_or_default();
        let dims = s.u32(&name)?;
        if dims == 0 || dims > MAX_DIMS {
            return Err(LlmError::Malformed(format!(
                "tensor {name}: {dims} dimensions"
            )));
        }
        let mut elems: u64 = 1;
        for _ in 0..dims {
            let d = s.u64(&name)?;
            elems = elems
                .checked_mul(d)
                // The most elements a byte holds is about 3 (Q2_K: 256 in 84 bytes): 4 per
                // byte of the file bounds any real tensor and stops overflow.
                .filter(|&e| e <= file_size.saturating_mul(4))
                .ok_or_else(|| {
                    LlmError::Malformed(format!(
                        "tensor {name}: element count too large for the file"
                    ))
                })?;
        }
        let dtype = ggml_dtype(s.u32(&name)?)
            .ok_or_else(|| LlmError::Unsupported(format!("tensor {name}: unknown ggml type")))?;
        let block = dtype.block_size() as u64;
        if !elems.is_multiple_of(block) {
            return Err(LlmError::Malformed(format!(
                "tensor {name}: {elems} elements, not whole blocks of {block}"
            )));
        }
        let bytes = elems / block * dtype.type_size() as u64;
        let offset = s.u64(&name)?;
        extents.push((name, offset, bytes));
    }
    let data_offset = s.pos.div_ceil(alignment).saturating_mul(alignment);
    for (name, offset, bytes) in extents {
        let end = data_offset
            .checked_add(offset)
            .and_then(|start| start.checked_add(bytes));
        if end.is_none_or(|end| end > file_size) {
            return Err(LlmError::Malformed(format!(
                "tensor {name}: {bytes} bytes at data offset {offset} run past the end of the file ({file_size} bytes)"
            )));
        }
    }
    Ok(HeaderSummary {
        version,
        metadata_entries,
        tensors,
        data_offset,
    })
}

/// Scans the file within `limits`, then parses it with candle. The returned reader is
/// positioned anywhere; candle seeks before each tensor.
pub fn read_content(
    path: &Path,
    limits: &LoadLimits,
) -> Result<(gguf_file::Content, BufReader<File>), LlmError> {
    let summary = scan(path, limits)?;
    let io = |source| LlmError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io)?);
    let content = crate::no_panic("reading the GGUF header", || {
        gguf_file::Content::read(&mut reader).map_err(|e| LlmError::Malformed(e.to_string()))
    })?;
    if content.tensor_data_offset != summary.data_offset {
        return Err(LlmError::Malformed(
            "tensor data offset disagrees between readers".into(),
        ));
    }
    Ok((content, reader))
}

/// A metadata value as a string, or a clear error naming the key.
pub(crate) fn md_str<'a>(content: &'a gguf_file::Content, key: &str) -> Result<&'a str, LlmError> {
    match content.metadata.get(key) {
        Some(gguf_file::Value::String(s)) => Ok(s),
        Some(_) => Err(LlmError::Malformed(format!("{key} is not a string"))),
        None => Err(LlmError::Unsupported(format!("no {key} in the metadata"))),
    }
}

/// A metadata value as an unsigned integer, if present.
pub(crate) fn md_u64(content: &gguf_file::Content, key: &str) -> Result<Option<u64>, LlmError> {
    use gguf_file::Value as V;
    Ok(match content.metadata.get(key) {
        None => None,
        Some(V::U8(v)) => Some(u64::from(*v)),
        Some(V::U16(v)) => Some(u64::from(*v)),
        Some(V::U32(v)) => Some(u64::from(*v)),
        Some(V::U64(v)) => Some(*v),
        Some(V::I8(v)) if *v >= 0 => Some(*v as u64),
        Some(V::I16(v)) if *v >= 0 => Some(*v as u64),
        Some(V::I32(v)) if *v >= 0 => Some(*v as u64),
        Some(V::I64(v)) if *v >= 0 => Some(*v as u64),
        Some(_) => {
            return Err(LlmError::Malformed(format!(
                "{key} is not a non-negative integer"
            )));
        }
    })
}
