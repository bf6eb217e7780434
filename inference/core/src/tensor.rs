//! V2 tensors: datatypes, the decoded request every model family reads ([`V2Request`]), the
//! output tensors it answers with, and decoders of the common input shapes (rows of numeric
//! features, BYTES texts).
//!
//! The REST and gRPC front ends decode into these types (so both accept and refuse exactly
//! the same inputs); a family's [`crate::Servable::infer`] reads them.

use std::collections::BTreeMap;

use infermesh_common::ServiceError;

/// The V2 datatypes infermesh accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `BOOL`, one byte each on the wire.
    Bool,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: length-prefixed (u32 LE) elements on the wire.
    Bytes,
}

impl DataType {
    /// Parses a V2 datatype name.
    pub fn parse(s: &str) -> Result<Self, ServiceError> {
        Ok(match s {
            "BOOL" => DataType::Bool,
            "INT32" => DataType::Int32,
            "INT64" => DataType::Int64,
            "FP32" => DataType::Fp32,
            "FP64" => DataType::Fp64,
            "BYTES" => DataType::Bytes,
            other => {
                return Err(ServiceError::invalid(format!(
                    "datatype '{other}' is not supported (BOOL, INT32, INT64, FP32, FP64, BYTES)"
                )));
            }
        })
    }

    /// The V2 name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Bytes per element for fixed-size types.
    pub fn width(self) -> Option<usize> {
        match self {
            DataType::Bool => Some(1),
            DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

/// Number of elements of `shape`, refusing negative dimensions and overflow.
pub fn element_count(shape: &[i64]) -> Result<usize, ServiceError> {
    let mut n: usize = 1;
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| {
            ServiceError::invalid(format!("shape {shape:?} has a negative dimension"))
        })?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| ServiceError::invalid(format!("shape {shape:?} is too large")))?;
    }
    Ok(n)
}

/// Decodes little-endian raw tensor bytes of a numeric datatype into `f32` features.
pub fn raw_to_f32(dt: DataType, raw: &[u8], expected: usize) -> Result<Vec<f32>, ServiceError> {
    let Some(w) = dt.width() else {
        return Err(ServiceError::invalid(
            "BYTES input cannot be used as numeric features",
        ));
    };
    // Checked: a shape's element count times the width can overflow (and, unchecked in a
    // release build, wrap to the length actually sent).
    let Some(need) = expected.checked_mul(w).filter(|&n| n == raw.len()) else {
        return Err(ServiceError::invalid(format!(
            "raw input has {} bytes, but shape and datatype {} need {}",
            raw.len(),
            dt.as_str(),
            expected
                .checked_mul(w)
                .map_or_else(|| "more than fit in memory".to_string(), |n| n.to_string())
        )));
    };
    debug_assert_eq!(need, raw.len());
    let out = match dt {
        DataType::Bool => raw
            .iter()
            .map(|&b| if b != 0 { 1.0 } else { 0.0 })
            .collect(),
        DataType::Int32 => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        DataType::Fp32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DataType::Int64 => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        DataType::Fp64 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        DataType::Bytes => Vec::new(),
    };
    Ok(out)
}

/// Encodes `f32` values as raw little-endian bytes.
pub fn f32_to_raw(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Splits V2 raw BYTES content (u32 LE length + bytes, repeated) into elements.
pub fn split_bytes_elements(raw: &[u8]) -> Result<Vec<Vec<u8>>, ServiceError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let Some(len) = raw.get(at..at + 4) else {
            return Err(ServiceError::invalid("truncated BYTES element length"));
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        at += 4;
        let Some(el) = raw.get(at..at + len) else {
            return Err(ServiceError::invalid("truncated BYTES element"));
        };
        out.push(el.to_vec());
        at += len;
    }
    Ok(out)
}

/// A decoded input tensor.
#[derive(Debug, Clone)]
pub struct InputTensor {
    /// Tensor name.
    pub name: String,
    /// Declared datatype.
    pub datatype: DataType,
    /// Declared shape.
    pub shape: Vec<i64>,
    /// Values as features (numeric types only).
    pub values: InputValues,
}

/// The data of an input tensor.
#[derive(Debug, Clone)]
pub enum InputValues {
    /// Numeric data as `f32`.
    Numeric(Vec<f32>),
    /// BYTES elements.
    Bytes(Vec<Vec<u8>>),
}

/// The one input of a single-input model, named `input_name`.
fn single_input(inputs: Vec<InputTensor>, input_name: &str) -> Result<InputTensor, ServiceError> {
    if inputs.len() != 1 {
        return Err(ServiceError::invalid(format!(
            "expected 1 input tensor '{input_name}', got {}",
            inputs.len()
        )));
    }
    let Some(input) = inputs.into_iter().next() else {
        return Err(ServiceError::invalid("no input tensor"));
    };
    if input.name != input_name {
        return Err(ServiceError::invalid(format!(
            "unexpected input '{}': the model's input is '{input_name}'",
            input.name
        )));
    }
    Ok(input)
}

/// Checks a tabular model's input and returns its rows: exactly one input named
/// `input_name`, shape `[n, num_features]` (or `[num_features]` for one row), numeric data.
pub fn tabular_rows(
    inputs: Vec<InputTensor>,
    input_name: &str,
    num_features: usize,
) -> Result<Vec<f32>, ServiceError> {
    let input = single_input(inputs, input_name)?;
    let features = match input.shape.as_slice() {
        [_, f] | [f] => *f,
        s => {
            return Err(ServiceError::invalid(format!(
                "input '{input_name}' must have shape [batch, {num_features}], got {s:?}"
            )));
        }
    };
    if features != num_features as i64 {
        return Err(ServiceError::invalid(format!(
            "input '{input_name}' has {features} features per row, the model expects {num_features}"
        )));
    }
    match input.values {
        InputValues::Numeric(v) => Ok(v),
        InputValues::Bytes(_) => Err(ServiceError::invalid(format!(
            "input '{input_name}' is BYTES; this model takes numeric features (FP32, FP64, INT32, INT64, BOOL)"
        ))),
    }
}

/// Checks a text model's input and returns its texts: exactly one BYTES input named
/// `input_name`, shape `[n]` or `[n, 1]`, every element UTF-8.
pub fn text_input(inputs: Vec<InputTensor>, input_name: &str) -> Result<Vec<String>, ServiceError> {
    let input = single_input(inputs, input_name)?;
    if !matches!(input.shape.as_slice(), [_] | [_, 1]) {
        return Err(ServiceError::invalid(format!(
            "input '{input_name}' must have shape [batch] or [batch, 1], got {:?}",
            input.shape
        )));
    }
    let InputValues::Bytes(elements) = input.values else {
        return Err(ServiceError::invalid(format!(
            "input '{input_name}' must be BYTES (UTF-8 texts), got {}",
            input.datatype.as_str()
        )));
    };
    elements
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            String::from_utf8(e).map_err(|_| {
                ServiceError::invalid(format!("input '{input_name}' element {i} is not UTF-8"))
            })
        })
        .collect()
}

/// A request parameter's value (V2 `parameters`: JSON values over REST, `InferParameter` over
/// gRPC).
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Double(f64),
    /// A string.
    String(String),
    /// Any other value (JSON null, array, object; an empty gRPC choice), named for errors.
    Other(&'static str),
}

impl Param {
    /// The value's type, for error messages ("a boolean", "a string"...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Param::Bool(_) => "a boolean",
            Param::Int(_) => "an integer",
            Param::Double(_) => "a double",
            Param::String(_) => "a string",
            Param::Other(kind) => kind,
        }
    }
}

/// A KServe V2 inference request as a model family sees it: decoded and checked inputs, the
/// outputs asked for, and the request's parameters.
#[derive(Debug, Clone, Default)]
pub struct V2Request {
    /// Inputs, in request order.
    pub inputs: Vec<InputTensor>,
    /// Names of the outputs asked for (empty: all).
    pub outputs: Vec<String>,
    /// Request-level parameters (Triton's own, such as `binary_data_output`, are left out).
    pub parameters: BTreeMap<String, Param>,
}

impl V2Request {
    /// The boolean parameter `key`, `default` when absent; another type is INVALID_ARGUMENT.
    pub fn bool_param(&self, key: &str, default: bool) -> Result<bool, ServiceError> {
        match self.parameters.get(key) {
            None => Ok(default),
            Some(Param::Bool(b)) => Ok(*b),
            Some(other) => Err(ServiceError::invalid(format!(
                "parameter '{key}' must be a boolean, not {}",
                other.type_name()
            ))),
        }
    }
}

/// The values of an output tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `FP32`, row-major.
    Fp32(Vec<f32>),
    /// `BOOL`.
    Bool(Vec<bool>),
    /// `INT64` (ids, counts).
    Int64(Vec<i64>),
    /// `BYTES` elements (labels, ids).
    Bytes(Vec<Vec<u8>>),
}

impl TensorData {
    /// The V2 datatype name.
    pub fn datatype(&self) -> &'static str {
        match self {
            TensorData::Fp32(_) => "FP32",
            TensorData::Bool(_) => "BOOL",
            TensorData::Int64(_) => "INT64",
            TensorData::Bytes(_) => "BYTES",
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Fp32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An output tensor of the V2 API.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// Tensor name.
    pub name: String,
    /// Shape, rows first.
    pub shape: Vec<i64>,
    /// Values.
    pub data: TensorData,
}

/// A tensor's metadata (V2 model metadata): name, datatype, shape with `-1` for a dimension
/// that varies (the batch).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorMeta {
    /// Name.
    pub name: String,
    /// V2 datatype.
    pub datatype: String,
    /// Shape; -1 for the batch dimension.
    pub shape: Vec<i64>,
}

impl TensorMeta {
    /// A tensor named `name` of `datatype` and `shape`.
    pub fn new(name: impl Into<String>, datatype: &str, shape: Vec<i64>) -> Self {
        Self {
            name: name.into(),
            datatype: datatype.to_string(),
            shape,
        }
    }
}

/// Encodes `bool` values as V2 raw content (one byte each).
pub fn bool_to_raw(values: &[bool]) -> Vec<u8> {
    values.iter().map(|&b| u8::from(b)).collect()
}

/// Encodes `i64` values as V2 raw content (little-endian, eight bytes each).
pub fn i64_to_raw(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Encodes BYTES elements as V2 raw content: u32 LE length, then the bytes, per element.
pub fn bytes_to_raw(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use infermesh_common::ErrorKind;

    #[test]
    fn decodes_every_numeric_type() {
        assert_eq!(
            raw_to_f32(DataType::Fp32, &1.5f32.to_le_bytes(), 1).unwrap(),
            vec![1.5]
        );
        assert_eq!(
            raw_to_f32(DataType::Fp64, &2.5f64.to_le_bytes(), 1).unwrap(),
            vec![2.5]
        );
        assert_eq!(
            raw_to_f32(DataType::Int32, &(-3i32).to_le_bytes(), 1).unwrap(),
            vec![-3.0]
        );
        assert_eq!(
            raw_to_f32(DataType::Int64, &7i64.to_le_bytes(), 1).unwrap(),
            vec![7.0]
        );
        assert_eq!(
            raw_to_f32(DataType::Bool, &[0, 1, 2], 3).unwrap(),
            vec![0.0, 1.0, 1.0]
        );
        assert_eq!(
            raw_to_f32(DataType::Fp32, &[0; 7], 2).unwrap_err().kind,
            ErrorKind::InvalidInput
        );
        assert!(raw_to_f32(DataType::Bytes, &[], 0).is_err());
        // 2^62 FP32 elements need 2^64 bytes: refused, not wrapped to 0 bytes.
        assert!(raw_to_f32(DataType::Fp32, &[], 1 << 62).is_err());
    }

    #[test]
    fn int64_outputs_encode_little_endian_and_decode_back() {
        let values = [-1i64, 0, 7, i64::MAX];
        let raw = i64_to_raw(&values);
        assert_eq!(raw.len(), 32);
        assert_eq!(&raw[..8], &[0xff; 8]);
        assert_eq!(&raw[16..24], &7i64.to_le_bytes());
        let t = TensorData::Int64(values.to_vec());
        assert_eq!((t.datatype(), t.len()), ("INT64", 4));
        // What a client reading INT64 raw output does.
        let back: Vec<i64> = raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, values);
    }

    #[test]
    fn parses_datatypes_and_counts_elements() {
        assert_eq!(DataType::parse("FP32").unwrap(), DataType::Fp32);
        assert!(DataType::parse("FP16").is_err());
        assert_eq!(element_count(&[2, 3]).unwrap(), 6);
        assert!(element_count(&[2, -1]).is_err());
        assert!(element_count(&[i64::MAX, i64::MAX]).is_err());
    }

    #[test]
    fn bytes_elements_split_and_refuse_truncation() {
        let mut raw = Vec::new();
        for s in ["ab", "", "xyz"] {
            raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
        let els = split_bytes_elements(&raw).unwrap();
        assert_eq!(els, vec![b"ab".to_vec(), vec![], b"xyz".to_vec()]);
        assert!(split_bytes_elements(&raw[..raw.len() - 1]).is_err());
        assert!(split_bytes_elements(&[1, 0]).is_err());
    }

    #[test]
    fn text_input_checks_name_shape_type_and_utf8() {
        let t = |name: &str, dt, shape: Vec<i64>, values| InputTensor {
            name: name.into(),
            datatype: dt,
            shape,
            values,
        };
        let bytes = |v: &[&[u8]]| InputValues::Bytes(v.iter().map(|b| b.to_vec()).collect());
        let ok = text_input(
            vec![t(
                "text",
                DataType::Bytes,
                vec![2],
                bytes(&[b"a", "\u{e9}".as_bytes()]),
            )],
            "text",
        );
        assert_eq!(ok.unwrap(), vec!["a".to_string(), "\u{e9}".to_string()]);
        assert!(
            text_input(
                vec![t("text", DataType::Bytes, vec![1, 1], bytes(&[b"a"]))],
                "text"
            )
            .is_ok()
        );
        assert!(
            text_input(
                vec![t("x", DataType::Bytes, vec![1], bytes(&[b"a"]))],
                "text"
            )
            .is_err()
        );
        assert!(
            text_input(
                vec![t("text", DataType::Bytes, vec![1, 2], bytes(&[b"a", b"b"]))],
                "text"
            )
            .is_err()
        );
        assert!(
            text_input(
                vec![t("text", DataType::Bytes, vec![1], bytes(&[&[0xff, 0xfe]]))],
                "text"
            )
            .is_err()
        );
        assert!(
            text_input(
                vec![t(
                    "text",
                    DataType::Fp32,
                    vec![1],
                    InputValues::Numeric(vec![1.0])
                )],
                "text"
            )
            .is_err()
        );
        let raw = bytes_to_raw(&[b"ab".to_vec(), vec![]]);
        assert_eq!(
            split_bytes_elements(&raw).unwrap(),
            vec![b"ab".to_vec(), vec![]]
        );
    }

    #[test]
    fn tabular_rows_checks_name_shape_and_type() {
        let t = |name: &str, shape: Vec<i64>, values| InputTensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape,
            values,
        };
        let ok = tabular_rows(
            vec![t("x", vec![1, 2], InputValues::Numeric(vec![1.0, 2.0]))],
            "x",
            2,
        );
        assert_eq!(ok.unwrap(), vec![1.0, 2.0]);
        assert!(
            tabular_rows(
                vec![t("y", vec![1, 2], InputValues::Numeric(vec![1.0, 2.0]))],
                "x",
                2
            )
            .is_err()
        );
        assert!(
            tabular_rows(
                vec![t("x", vec![1, 3], InputValues::Numeric(vec![0.0; 3]))],
                "x",
                2
            )
            .is_err()
        );
        assert!(
            tabular_rows(
                vec![t("x", vec![1, 1, 2], InputValues::Numeric(vec![0.0; 2]))],
                "x",
                2
            )
            .is_err()
        );
        assert!(
            tabular_rows(vec![t("x", vec![1, 2], InputValues::Bytes(vec![]))], "x", 2).is_err()
        );
        assert!(tabular_rows(vec![], "x", 2).is_err());
    }
}
