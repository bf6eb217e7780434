//! Tables read as pandas' `read_csv` (and pyarrow's `to_pandas`) type them, for the drift
//! job: a CSV or TSV without quote characters through a reader of its own (the file split in
//! place at line and field separators, chunks of lines in parallel), anything else through
//! Polars; each column typed in one pass over borrowed cells (integers, floats, booleans,
//! pandas' missing-value tokens). Written by hand: no crate reads a table with pandas' typing.

use std::path::Path;

use infermesh_drift::Values;
use polars::prelude::*;
use rayon::prelude::*;

use super::is_parquet;
use crate::table::{TableError, TableSpec};

/// pandas' default missing-value tokens (`read_csv` `na_values`).
const NA_TOKENS: [&str; 19] = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
];

/// A table's columns, typed as pandas would read them.
pub fn read(path: &Path, separator: Option<u8>) -> Result<Vec<(String, Values)>, TableError> {
    if !is_parquet(path)
        && path.is_file()
        && let Some(columns) = read_unquoted(path, separator)?
    {
        return Ok(columns);
    }
    let mut spec = TableSpec::new(path);
    spec.separator = separator;
    let table = spec.read()?;
    typed(&table, &table.columns())
}

/// A CSV or TSV file without a quote character, read and typed without Polars (`None`
/// for any other file, which Polars reads): the file is split at line and field separators
/// in place (no cell is copied), in parallel over chunks of lines, and the columns typed in
/// parallel. pandas' reading of such a file: a UTF-8 byte-order mark dropped, `\r\n` line
/// ends, blank lines skipped, a short row's missing fields missing, a long row an error.
/// Polars' reader spends most of its time counting lines and building string columns that
/// the typing reads once; this is about twice as fast on the drift benchmark's tables.
fn read_unquoted(
    path: &Path,
    separator: Option<u8>,
) -> Result<Option<Vec<(String, Values)>>, TableError> {
    let err = |message: String| TableError::Read {
        path: path.display().to_string(),
        message,
    };
    let sep = separator.unwrap_or(match path.extension().and_then(|e| e.to_str()) {
        Some("tsv" | "tab") => b'\t',
        _ => b',',
    });
    if !sep.is_ascii() || sep == b'\n' || sep == b'\r' || sep == b'"' {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.contains(&b'"') {
        return Ok(None);
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(None);
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let sep = char::from(sep);
    // The header: the first line that is not blank.
    let mut start = 0;
    let header = loop {
        let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let l = strip_cr(&text[start..end]);
        start = (end + 1).min(text.len());
        if !l.is_empty() {
            break l;
        }
        if end >= text.len() {
            return Ok(None);
        }
    };
    let body = &text[start..];
    let names: Vec<&str> = header.split(sep).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Ok(None);
    }
    let nf = names.len();
    // Chunks of whole lines, one or more per thread.
    let parts = rayon::current_num_threads().max(1) * 2;
    let mut chunks = Vec::with_capacity(parts);
    let mut rest = body;
    while !rest.is_empty() {
        let want = (body.len() / parts).max(1 << 16).min(rest.len());
        let end = rest[want..].find('\n').map_or(rest.len(), |i| want + i + 1);
        let (chunk, tail) = rest.split_at(end);
        chunks.push(chunk);
        rest = tail;
    }
    let split: Vec<Vec<Vec<Option<&str>>>> = chunks
        .par_iter()
        .map(|chunk| {
            let mut cols: Vec<Vec<Option<&str>>> =
                vec![Vec::with_capacity(chunk.len() / (8 * nf).max(1)); nf];
            for l in chunk.split('\n').map(strip_cr).filter(|l| !l.is_empty()) {
                let mut fields = l.split(sep);
                for col in cols.iter_mut() {
                    col.push(cell(fields.next()));
                }
                if fields.next().is_some() {
                    return Err(err(format!(
                        "a row has more than the header's {nf} fields: {:?}",
                        l.chars().take(200).collect::<String>()
                    )));
                }
            }
            Ok(cols)
        })
        .collect::<Result<_, _>>()?;
    let columns = (0..nf)
        .into_par_iter()
        .map(|i| {
            let cells: Vec<Option<&str>> =
                split.iter().flat_map(|c| c[i].iter().copied()).collect();
            (names[i].to_owned(), pandas_typed(&cells))
        })
        .collect();
    Ok(Some(columns))
}

/// A line without its `\r` (of a `\r\n` end).
fn strip_cr(l: &str) -> &str {
    l.strip_suffix('\r').unwrap_or(l)
}

/// Columns `names` of a loaded table, typed as pandas would type them (the columns in
/// parallel).
pub fn typed(
    table: &crate::table::Table,
    names: &[String],
) -> Result<Vec<(String, Values)>, TableError> {
    names
        .par_iter()
        .map(|name| {
            let column = table.frame_column(name)?;
            let bad = |message: String| TableError::BadValue {
                path: table.path().to_owned(),
                column: name.clone(),
                message,
            };
            let values = if matches!(column.dtype(), DataType::String) {
                let ca = column.str().map_err(|e| bad(e.to_string()))?;
                let cells: Vec<Option<&str>> = ca.iter().map(cell).collect();
                pandas_typed(&cells)
            } else {
                typed_column(column).map_err(bad)?
            };
            Ok((name.clone(), values))
        })
        .collect()
}

/// A CSV cell as pandas reads it: trimmed, `None` when missing (one of [`NA_TOKENS`]).
fn cell(raw: Option<&str>) -> Option<&str> {
    let s = raw?.trim();
    // Every token is at most 8 bytes and starts with one of these bytes (or is empty).
    let maybe_na = s.len() <= 8
        && s.as_bytes()
            .first()
            .is_none_or(|b| matches!(b, b'#' | b'-' | b'1' | b'<' | b'N' | b'n'));
    (!(maybe_na && NA_TOKENS.contains(&s))).then_some(s)
}

/// pandas' `read_csv` type inference over one column of cells ([`cell`]s: missing ones
/// `None`): int64 when every present cell is an integer and none is missing, float64 when
/// every present cell is a number, bool when every one is a boolean word, text otherwise.
/// One pass while the cells are integers; the first one that is not switches to floats,
/// every cell then parsed as a float (`"-0"` is the float -0.0).
pub fn pandas_typed(cells: &[Option<&str>]) -> Values {
    let mut ints = Vec::with_capacity(cells.len());
    let mut any_missing = false;
    let mut all_ints = true;
    for c in cells {
        match c {
            None => {
                any_missing = true;
                ints.push(0);
            }
            Some(s) => match s.parse::<i64>() {
                Ok(v) => ints.push(v),
                Err(_) => {
                    all_ints = false;
                    break;
                }
            },
        }
    }
    if all_ints {
        if !any_missing {
            return Values::Int(ints);
        }
        return Values::Float(
            cells
                .iter()
                .zip(ints)
                .map(|(c, v)| if c.is_some() { v as f64 } else { f64::NAN })
                .collect(),
        );
    }
    drop(ints);
    let mut floats = Vec::with_capacity(cells.len());
    let all_numbers = cells.iter().all(|c| match c {
        None => {
            floats.push(f64::NAN);
            true
        }
        Some(s) => match s.parse::<f64>() {
            Ok(v) => {
                floats.push(v);
                true
            }
            Err(_) => false,
        },
    });
    if all_numbers {
        return Values::Float(floats);
    }
    let as_bool = |s: &str| match s {
        "True" | "TRUE" | "true" => Some(true),
        "False" | "FALSE" | "false" => Some(false),
        _ => None,
    };
    if cells.iter().flatten().all(|s| as_bool(s).is_some()) {
        return Values::Bool(cells.iter().map(|c| c.and_then(as_bool)).collect());
    }
    Values::Str(cells.iter().map(|c| c.map(String::from)).collect())
}

/// A typed (Parquet) column as pandas holds it.
fn typed_column(column: &Column) -> Result<Values, String> {
    let dtype = column.dtype().clone();
    let floats = |c: &Column| -> Result<Vec<f64>, String> {
        let c = c.cast(&DataType::Float64).map_err(|e| e.to_string())?;
        Ok(c.f64()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    };
    Ok(match dtype {
        DataType::Float32 | DataType::Float64 => Values::Float(floats(column)?),
        d if d.is_integer() => {
            if column.null_count() > 0 {
                Values::Float(floats(column)?)
            } else {
                let c = column.cast(&DataType::Int64).map_err(|e| e.to_string())?;
                Values::Int(
                    c.i64()
                        .map_err(|e| e.to_string())?
                        .iter()
                        .map(Option::unwrap_or_default)
                        .collect(),
                )
            }
        }
        DataType::Boolean => {
            Values::Bool(column.bool().map_err(|e| e.to_string())?.iter().collect())
        }
        other => Values::Other {
            dtype: other.to_string(),
            len: column.len(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells<'a>(v: &[&'a str]) -> Vec<Option<&'a str>> {
        v.iter().map(|s| cell(Some(s))).collect()
    }

    #[test]
    fn csv_cells_are_typed_as_pandas_types_them() {
        assert_eq!(pandas_typed(&cells(&["1", "2"])), Values::Int(vec![1, 2]));
        let Values::Float(f) = pandas_typed(&cells(&["1", "NA"])) else {
            panic!("an integer column with a gap is float64")
        };
        assert_eq!(f[0], 1.0);
        assert!(f[1].is_nan());
        assert!(matches!(
            pandas_typed(&cells(&["1.5", "2"])),
            Values::Float(_)
        ));
        assert_eq!(
            pandas_typed(&cells(&["True", "false"])),
            Values::Bool(vec![Some(true), Some(false)])
        );
        assert_eq!(
            pandas_typed(&cells(&["a", ""])),
            Values::Str(vec![Some("a".into()), None])
        );
        // Integers, then a float: every cell parsed as a float ("-0" keeps its sign).
        let Values::Float(f) = pandas_typed(&cells(&["1", "-0", " 2.5 ", "NULL", "inf"])) else {
            panic!("a column with a float is float64")
        };
        assert_eq!(f[..3], [1.0, -0.0, 2.5]);
        assert!(f[1].is_sign_negative() && f[3].is_nan() && f[4] == f64::INFINITY);
        // Past i64: float64.
        assert_eq!(
            pandas_typed(&cells(&["99999999999999999999", "1"])),
            Values::Float(vec![1e20, 1.0])
        );
        // Only gaps: float64 of NaN.
        let Values::Float(f) = pandas_typed(&cells(&["", "nan", "N/A"])) else {
            panic!("an empty column is float64")
        };
        assert!(f.iter().all(|v| v.is_nan()));
        // Numbers, then a word: text, the numbers kept as written.
        assert_eq!(
            pandas_typed(&cells(&["1", "2.0", "x"])),
            Values::Str(vec![Some("1".into()), Some("2.0".into()), Some("x".into())])
        );
        assert_eq!(
            pandas_typed(&cells(&["True", "1"])),
            Values::Str(vec![Some("True".into()), Some("1".into())])
        );
    }

    #[test]
    fn unquoted_files_read_as_polars_and_pandas_read_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = "a,b,c,d\r\n1,1.5,x,True\n-2,7,y,false\r\n3, 2e3 ,,TRUE\n";
        let path = dir.path().join("t.csv");
        std::fs::write(&path, body).expect("write");
        let fast = read_unquoted(&path, None).expect("read").expect("unquoted");
        let mut spec = TableSpec::new(&path);
        spec.separator = None;
        let table = spec.read().expect("polars");
        let slow = typed(&table, &table.columns()).expect("typed");
        assert_eq!(fast, slow);
        assert_eq!(fast[0].1, Values::Int(vec![1, -2, 3]));
        // A blank line is skipped, as pandas skips it (Polars reads a row of nulls).
        std::fs::write(&path, "a,b\n1,2\n\n3,4\n").expect("write");
        let fast = read_unquoted(&path, None).expect("read").expect("unquoted");
        assert_eq!(fast[0].1, Values::Int(vec![1, 3]));
        // A byte-order mark and blank lines before the header; a short row's gap is missing.
        let path = dir.path().join("u.tsv");
        std::fs::write(&path, "\u{feff}\n\nx\ty\n1\t2\n3\n").expect("write");
        let fast = read_unquoted(&path, None).expect("read").expect("unquoted");
        assert_eq!(fast[0], ("x".to_owned(), Values::Int(vec![1, 3])));
        let Values::Float(y) = &fast[1].1 else {
            panic!("a column with a gap is float64")
        };
        assert!(y[0] == 2.0 && y[1].is_nan());
        // A long row is an error; quotes go to Polars.
        std::fs::write(&path, "x\ty\n1\t2\t3\n").expect("write");
        assert!(read_unquoted(&path, None).is_err());
        std::fs::write(&path, "x\ty\n\"1\"\t2\n").expect("write");
        assert!(read_unquoted(&path, None).expect("read").is_none());
        // More rows than one chunk: chunks split at line ends.
        let mut big = String::from("i,f\n");
        for i in 0..50_000 {
            big.push_str(&format!("{i},{}.25\n", i % 7));
        }
        let path = dir.path().join("big.csv");
        std::fs::write(&path, &big).expect("write");
        let fast = read_unquoted(&path, None).expect("read").expect("unquoted");
        assert_eq!(fast[0].1, Values::Int((0..50_000).collect()));
    }

    #[test]
    fn every_missing_token_and_only_those_is_missing() {
        for t in NA_TOKENS {
            assert_eq!(cell(Some(t)), None, "{t:?}");
            assert_eq!(cell(Some(&format!(" {t} "))), None, "{t:?} padded");
        }
        for s in [
            "0", "1", "1.5", "-1", "na", "Nan", "NONE", "#N/", "1.#INDX", "<na>", "-", "x",
        ] {
            assert_eq!(cell(Some(s)), Some(s), "{s:?}");
        }
        assert_eq!(cell(None), None);
    }
}
