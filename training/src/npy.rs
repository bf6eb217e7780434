//! A reader of NumPy `.npy` files holding a 2-D little-endian float32 array (what
//! `np.save("emb.npy", model.encode(texts).astype("float32"))` writes), bounded: the header
//! is read within 64 KiB, and the data must be exactly `rows x cols x 4` bytes before any
//! of it is kept.

use std::io::Read;
use std::path::Path;

/// Largest header accepted (NumPy pads headers to 64 bytes; real ones are ~128).
const MAX_HEADER: usize = 64 << 10;

/// Why a `.npy` file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct NpyError {
    /// The file.
    pub path: String,
    /// Why.
    pub message: String,
}

/// The rows (`shape[0]`), columns (`shape[1]`) and row-major values of a 2-D `<f4` array in
/// C order.
pub fn read_f32_matrix(path: &Path) -> Result<(usize, usize, Vec<f32>), NpyError> {
    let err = |message: String| NpyError {
        path: path.display().to_string(),
        message,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let file_len = f.metadata().map_err(|e| err(e.to_string()))?.len();
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic)
        .map_err(|_| err("not a .npy file (too short)".into()))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(err("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let header_len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            f.read_exact(&mut b)
                .map_err(|_| err("truncated header length".into()))?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            f.read_exact(&mut b)
                .map_err(|_| err("truncated header length".into()))?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(err(format!(".npy format version {v} is not supported"))),
    };
    if header_len > MAX_HEADER {
        return Err(err(format!(
            "header of {header_len} bytes (at most {MAX_HEADER})"
        )));
    }
    let mut header = vec![0u8; header_len];
    f.read_exact(&mut header)
        .map_err(|_| err("truncated header".into()))?;
    let header = String::from_utf8_lossy(&header);
    let (rows, cols) = parse_header(&header).map_err(err)?;
    // Magic and version (8 bytes), the header length (2 or 4 bytes), the header.
    let preamble: u64 = if magic[6] == 1 { 10 } else { 12 };
    let prefix = preamble + header_len as u64;
    let want = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| err(format!("shape ({rows}, {cols}) is too large")))?;
    if file_len.checked_sub(prefix) != Some(want as u64) {
        return Err(err(format!(
            "shape ({rows}, {cols}) float32 needs {want} data bytes, the file has {}",
            file_len.saturating_sub(prefix)
        )));
    }
    let mut data = vec![0u8; want];
    f.read_exact(&mut data)
        .map_err(|e| err(format!("cannot read the data: {e}")))?;
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((rows, cols, values))
}

/// `(rows, cols)` from a header such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 384), }`.
fn parse_header(h: &str) -> Result<(usize, usize), String> {
    let value = |key: &str| -> Result<&str, String> {
        let at = h
            .find(&format!("'{key}':"))
            .ok_or_else(|| format!("header has no '{key}'"))?;
        Ok(h[at + key.len() + 3..].trim_start())
    };
    let descr = value("descr")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'|f4'")) {
        return Err(format!(
            "dtype {} is not little-endian float32 ('<f4'); save with .astype('float32')",
            descr.split(',').next().unwrap_or(descr)
        ));
    }
    if !value("fortran_order")?.starts_with("False") {
        return Err("Fortran-ordered arrays are not supported (save a C-ordered copy)".into());
    }
    let shape = value("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| "malformed shape".to_string())?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension '{s}'"))
        })
        .collect::<Result<_, _>>()?;
    match dims.as_slice() {
        [r, c] => Ok((*r, *c)),
        d => Err(format!(
            "shape {d:?} is not 2-D (one row of floats per text)"
        )),
    }
}

/// Writes a 2-D `<f4` array as `.npy` version 1 (tests, and tools that hand embeddings on).
pub fn write_f32_matrix(
    path: &Path,
    rows: usize,
    cols: usize,
    values: &[f32],
) -> std::io::Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Pad with spaces so the data starts on a 64-byte boundary, ending in a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_refuses_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e.npy");
        let values: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        write_f32_matrix(&p, 2, 3, &values).unwrap();
        assert_eq!(read_f32_matrix(&p).unwrap(), (2, 3, values.clone()));
        // The header pads to a multiple of 64 bytes; then 6 f32 values (24 bytes).
        assert_eq!(std::fs::read(&p).unwrap().len() % 64, 24);

        // A header as NumPy 1.x/2.x writes it for np.zeros((2, 3), "float32").
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(parse_header(h).unwrap(), (2, 3));
        let h64 = h.replace("<f4", "<f8");
        assert!(parse_header(&h64).unwrap_err().contains("float32"));
        let f = h.replace("False", "True");
        assert!(parse_header(&f).unwrap_err().contains("Fortran"));
        let one_d = h.replace("(2, 3)", "(6,)");
        assert!(parse_header(&one_d).unwrap_err().contains("2-D"));

        // Truncated data, a huge claimed shape, not a .npy at all.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        assert!(
            read_f32_matrix(&p)
                .unwrap_err()
                .message
                .contains("needs 24")
        );
        let huge = String::from_utf8_lossy(&bytes[10..bytes.len() - 24])
            .replace("(2, 3)", "(99999999999, 99999999999)");
        let mut hb = bytes[..8].to_vec();
        hb.extend_from_slice(&(huge.len() as u16).to_le_bytes());
        hb.extend_from_slice(huge.as_bytes());
        std::fs::write(&p, &hb).unwrap();
        assert!(read_f32_matrix(&p).is_err());
        std::fs::write(&p, b"a,b\n1,2\n").unwrap();
        assert!(read_f32_matrix(&p).unwrap_err().message.contains("magic"));
    }
}
