//! KServe V2 inference requests, decoded and checked once: from REST JSON (with Triton's
//! binary-data extension) and from protobuf (typed `contents` or `raw_input_contents`), into
//! one [`InferRequest`]. Both front ends accept and refuse exactly the same tensors, with the
//! same messages, because every check lives here.
//!
//! Nothing is sized from a client's claim alone: a shape's element count must match the data
//! actually sent, so a request can never make the server allocate more than its own body.

use serde::Deserialize;
use serde_json::{Map, Value};

use infermesh_common::ServiceError;
use infermesh_proto::inference as pb;

use infermesh_inference::{Param, V2Request};

use crate::state::InferRequest;
use crate::tensor::{
    DataType, InputTensor, InputValues, element_count, raw_to_f32, split_bytes_elements,
};

/// Where one input's values are, as the protocol carried them.
#[derive(Debug)]
pub enum WireValues<'a> {
    /// Little-endian bytes (gRPC `raw_input_contents`, the REST binary-data extension);
    /// BYTES elements are u32 LE length-prefixed.
    Raw(&'a [u8]),
    /// REST JSON `data`: flat or nested row-major arrays.
    Json(&'a Value),
    /// gRPC typed `contents`.
    Contents(pb::InferTensorContents),
}

/// Decodes and checks one input tensor: a known datatype, a shape whose element count
/// matches the values sent, and values of that datatype.
pub fn decode_input(
    name: String,
    datatype: &str,
    shape: Vec<i64>,
    wire: WireValues<'_>,
) -> Result<InputTensor, ServiceError> {
    let dt = DataType::parse(datatype)?;
    let n = element_count(&shape)?;
    let values = match wire {
        WireValues::Raw(raw) if dt == DataType::Bytes => {
            let els = split_bytes_elements(raw)?;
            check_count(&name, els.len(), n)?;
            InputValues::Bytes(els)
        }
        WireValues::Raw(raw) => InputValues::Numeric(raw_to_f32(dt, raw, n)?),
        WireValues::Json(data) => json_values(&name, dt, data, n)?,
        WireValues::Contents(c) => {
            let v: Vec<f32> = match dt {
                DataType::Bool => c
                    .bool_contents
                    .iter()
                    .map(|&b| if b { 1.0 } else { 0.0 })
                    .collect(),
                DataType::Int32 => c.int_contents.iter().map(|&x| x as f32).collect(),
                DataType::Int64 => c.int64_contents.iter().map(|&x| x as f32).collect(),
                DataType::Fp32 => c.fp32_contents,
                DataType::Fp64 => c.fp64_contents.iter().map(|&x| x as f32).collect(),
                DataType::Bytes => {
                    check_count(&name, c.bytes_contents.len(), n)?;
                    return Ok(InputTensor {
                        name,
                        datatype: dt,
                        shape,
                        values: InputValues::Bytes(c.bytes_contents),
                    });
                }
            };
            check_count(&name, v.len(), n)?;
            InputValues::Numeric(v)
        }
    };
    Ok(InputTensor {
        name,
        datatype: dt,
        shape,
        values,
    })
}

fn check_count(name: &str, got: usize, want: usize) -> Result<(), ServiceError> {
    if got != want {
        return Err(ServiceError::invalid(format!(
            "input '{name}' has {got} elements but its shape holds {want}"
        )));
    }
    Ok(())
}

/// How a REST caller wants its outputs: JSON `data`, or raw bytes after the JSON (the
/// binary-data extension), per output or for all.
#[derive(Debug, Clone, Default)]
pub struct RestOutputPrefs {
    all_binary: bool,
    binary: Vec<String>,
}

impl RestOutputPrefs {
    /// Whether output `name` goes in the binary tail.
    pub fn wants_binary(&self, name: &str) -> bool {
        self.all_binary || self.binary.iter().any(|b| b == name)
    }
}

#[derive(Debug, Deserialize)]
struct RestInferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<RestInput>,
    #[serde(default)]
    outputs: Option<Vec<RestOutput>>,
}

#[derive(Debug, Deserialize)]
struct RestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RestOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// Decodes a REST inference body: JSON, followed by the inputs' binary data when
/// `json_len` (the `Inference-Header-Content-Length` header) is given.
pub fn decode_rest(
    model: String,
    version: Option<String>,
    json_len: Option<&str>,
    body: &[u8],
) -> Result<(InferRequest, RestOutputPrefs), ServiceError> {
    let json_len = match json_len {
        Some(v) => {
            let n: usize = v.trim().parse().map_err(|_| {
                ServiceError::invalid("Inference-Header-Content-Length is not a number")
            })?;
            if n > body.len() {
                return Err(ServiceError::invalid(format!(
                    "Inference-Header-Content-Length {n} is larger than the body ({} bytes)",
                    body.len()
                )));
            }
            n
        }
        None => body.len(),
    };
    let req: RestInferRequest = serde_json::from_slice(&body[..json_len])
        .map_err(|e| ServiceError::invalid(format!("malformed inference request JSON: {e}")))?;
    let mut binary = &body[json_len..];
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let bin_size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    ServiceError::invalid(format!(
                        "input '{}': binary_data_size must be an integer",
                        input.name
                    ))
                })
            })
            .transpose()?;
        let tensor = match (bin_size, &input.data) {
            (Some(size), None) => {
                let size = usize::try_from(size)
                    .ok()
                    .filter(|&s| s <= binary.len())
                    .ok_or_else(|| {
                        ServiceError::invalid(format!(
                            "input '{}': binary_data_size {size} is past the end of the body",
                            input.name
                        ))
                    })?;
                let (raw, rest) = binary.split_at(size);
                binary = rest;
                decode_input(
                    input.name,
                    &input.datatype,
                    input.shape,
                    WireValues::Raw(raw),
                )?
            }
            (None, Some(data)) => decode_input(
                input.name.clone(),
                &input.datatype,
                input.shape,
                WireValues::Json(data),
            )?,
            (Some(_), Some(_)) => {
                return Err(ServiceError::invalid(format!(
                    "input '{}' has both data and binary_data_size",
                    input.name
                )));
            }
            (None, None) => {
                return Err(ServiceError::invalid(format!(
                    "input '{}' has no data",
                    input.name
                )));
            }
        };
        inputs.push(tensor);
    }
    if !binary.is_empty() {
        return Err(ServiceError::invalid(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len()
        )));
    }
    let parameters = req
        .parameters
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json_param(v)))
        .collect();
    let requested = req.outputs.unwrap_or_default();
    let prefs = RestOutputPrefs {
        all_binary: flag(&req.parameters, "binary_data_output"),
        binary: requested
            .iter()
            .filter(|o| flag(&o.parameters, "binary_data"))
            .map(|o| o.name.clone())
            .collect(),
    };
    Ok((
        InferRequest {
            model,
            version,
            id: req.id.unwrap_or_default(),
            v2: V2Request {
                inputs,
                outputs: requested.into_iter().map(|o| o.name).collect(),
                parameters,
            },
        },
        prefs,
    ))
}

/// Decodes a gRPC ModelInferRequest: inputs from `raw_input_contents` when present (one per
/// input, in order), else from each input's typed `contents`. Also says whether the request
/// used raw contents (the answer then uses them too).
pub fn decode_grpc(req: pb::ModelInferRequest) -> Result<(InferRequest, bool), ServiceError> {
    let pb::ModelInferRequest {
        model_name,
        model_version,
        id,
        parameters,
        inputs: wire_inputs,
        outputs,
        raw_input_contents: raw,
    } = req;
    let use_raw = !raw.is_empty();
    if use_raw && raw.len() != wire_inputs.len() {
        return Err(ServiceError::invalid(format!(
            "raw_input_contents has {} entries for {} inputs",
            raw.len(),
            wire_inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(wire_inputs.len());
    for (i, input) in wire_inputs.into_iter().enumerate() {
        let wire = match raw.get(i) {
            Some(bytes) => {
                if input.contents.is_some() {
                    return Err(ServiceError::invalid(format!(
                        "input '{}' has contents while raw_input_contents is used",
                        input.name
                    )));
                }
                WireValues::Raw(bytes)
            }
            None => WireValues::Contents(input.contents.unwrap_or_default()),
        };
        inputs.push(decode_input(
            input.name,
            &input.datatype,
            input.shape,
            wire,
        )?);
    }
    let parameters = parameters
        .into_iter()
        .map(|(k, p)| {
            use pb::infer_parameter::ParameterChoice as C;
            let v = match p.parameter_choice {
                Some(C::BoolParam(b)) => Param::Bool(b),
                Some(C::Int64Param(i)) => Param::Int(i),
                Some(C::Uint64Param(u)) => {
                    i64::try_from(u).map_or(Param::Other("an integer past i64"), Param::Int)
                }
                Some(C::DoubleParam(d)) => Param::Double(d),
                Some(C::StringParam(s)) => Param::String(s),
                None => Param::Other("empty"),
            };
            (k, v)
        })
        .collect();
    Ok((
        InferRequest {
            model: model_name,
            version: (!model_version.is_empty()).then_some(model_version),
            id,
            v2: V2Request {
                inputs,
                outputs: outputs.into_iter().map(|o| o.name).collect(),
                parameters,
            },
        },
        use_raw,
    ))
}

/// A JSON parameter as a [`Param`].
fn json_param(v: &Value) -> Param {
    match v {
        Value::Bool(b) => Param::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Param::Int(i),
            None => n.as_f64().map_or(Param::Other("a number"), Param::Double),
        },
        Value::String(s) => Param::String(s.clone()),
        other => Param::Other(json_type(other)),
    }
}

/// A JSON value's type, for error messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn flag(params: &Option<Map<String, Value>>, key: &str) -> bool {
    params
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Flattens row-major JSON data (nested or flat arrays) of datatype `dt`.
fn json_values(
    name: &str,
    dt: DataType,
    data: &Value,
    n: usize,
) -> Result<InputValues, ServiceError> {
    // The shape is the caller's claim: never reserve more than the body can hold.
    let mut flat: Vec<&Value> = Vec::with_capacity(n.min(1 << 16));
    flatten(data, &mut flat, 0)
        .map_err(|e| ServiceError::invalid(format!("input '{name}': {e}")))?;
    check_count(name, flat.len(), n)?;
    let bad = |v: &Value| {
        ServiceError::invalid(format!(
            "input '{name}': {v} is not a valid {} value",
            dt.as_str()
        ))
    };
    Ok(match dt {
        DataType::Bytes => InputValues::Bytes(
            flat.iter()
                .map(|v| {
                    v.as_str()
                        .map(|s| s.as_bytes().to_vec())
                        .ok_or_else(|| bad(v))
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Bool => InputValues::Numeric(
            flat.iter()
                .map(|v| {
                    v.as_bool()
                        .map(|b| if b { 1.0 } else { 0.0 })
                        .ok_or_else(|| bad(v))
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Int32 | DataType::Int64 => InputValues::Numeric(
            flat.iter()
                .map(|v| {
                    v.as_i64()
                        .filter(|x| dt == DataType::Int64 || i32::try_from(*x).is_ok())
                        .map(|x| x as f32)
                        .ok_or_else(|| bad(v))
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Fp32 | DataType::Fp64 => InputValues::Numeric(
            flat.iter()
                .map(|v| match v {
                    // JSON has no NaN: null (and Triton's "NaN" strings) mean a missing value.
                    Value::Null => Ok(f32::NAN),
                    Value::String(s) if s.eq_ignore_ascii_case("nan") => Ok(f32::NAN),
                    _ => v.as_f64().map(|x| x as f32).ok_or_else(|| bad(v)),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Walks nested arrays without recursion (serde_json already refuses documents nested past
/// 128 levels; this keeps the bound to 32 levels of arrays).
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>, depth: usize) -> Result<(), String> {
    let mut stack: Vec<(&'a Value, usize)> = vec![(v, depth)];
    while let Some((v, d)) = stack.pop() {
        if d > 32 {
            return Err("data is nested too deeply".into());
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().rev().map(|it| (it, d + 1))),
            Value::Object(_) => return Err("data must be an array of values".into()),
            other => out.push(other),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use infermesh_common::ErrorKind;
    use proptest::prelude::*;
    use prost::Message;
    use serde_json::json;
    use std::time::{Duration, Instant};

    #[test]
    fn json_values_flatten_and_check() {
        let v = json!([[1, 2.5], [null, "NaN"]]);
        let InputValues::Numeric(x) = json_values("x", DataType::Fp32, &v, 4).unwrap() else {
            panic!("numeric expected")
        };
        assert_eq!(x[..2], [1.0, 2.5]);
        assert!(x[2].is_nan() && x[3].is_nan());
        assert!(json_values("x", DataType::Fp32, &v, 3).is_err());
        assert!(json_values("x", DataType::Int32, &json!([1.5]), 1).is_err());
        assert!(json_values("x", DataType::Int32, &json!([5_000_000_000i64]), 1).is_err());
        assert!(json_values("x", DataType::Int64, &json!([5_000_000_000i64]), 1).is_ok());
        assert!(json_values("x", DataType::Bool, &json!([true, 1]), 2).is_err());
        assert!(json_values("x", DataType::Bytes, &json!(["a", "b"]), 2).is_ok());
        assert!(json_values("x", DataType::Fp32, &json!([{"a": 1}]), 1).is_err());
        let mut deep = json!([1.0]);
        for _ in 0..40 {
            deep = json!([deep]);
        }
        assert!(json_values("x", DataType::Fp32, &deep, 1).is_err());
    }

    /// The same tensor sent as REST JSON, REST binary, gRPC contents and gRPC raw decodes to
    /// the same values; the same mismatch is refused by all four with the same message.
    #[test]
    fn both_protocols_decode_and_refuse_alike() {
        let values = [1.0f32, -2.5, 3.0, 4.25];
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let json_body = json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
            "data": values}]})
        .to_string();
        let head = json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
            "parameters": {"binary_data_size": raw.len()}}]})
        .to_string();
        let mut bin_body = head.clone().into_bytes();
        bin_body.extend_from_slice(&raw);
        let len = head.len().to_string();
        let grpc = |raw_contents: bool, shape: Vec<i64>| pb::ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![pb::model_infer_request::InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape,
                contents: (!raw_contents).then(|| pb::InferTensorContents {
                    fp32_contents: values.to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            raw_input_contents: if raw_contents {
                vec![raw.clone()]
            } else {
                vec![]
            },
            ..Default::default()
        };
        let numeric = |r: &InferRequest| match &r.v2.inputs[0].values {
            InputValues::Numeric(v) => v.clone(),
            InputValues::Bytes(_) => panic!("numeric expected"),
        };
        let decoded = [
            numeric(
                &decode_rest("m".into(), None, None, json_body.as_bytes())
                    .unwrap()
                    .0,
            ),
            numeric(
                &decode_rest("m".into(), None, Some(&len), &bin_body)
                    .unwrap()
                    .0,
            ),
            numeric(&decode_grpc(grpc(false, vec![2, 2])).unwrap().0),
            numeric(&decode_grpc(grpc(true, vec![2, 2])).unwrap().0),
        ];
        for d in &decoded {
            assert_eq!(d, &values);
        }
        let bad_json = json_body.replace("[2,2]", "[2,3]");
        assert_ne!(bad_json, json_body);
        let errors = [
            decode_rest("m".into(), None, None, bad_json.as_bytes()).unwrap_err(),
            decode_grpc(grpc(false, vec![2, 3])).unwrap_err(),
        ];
        for e in &errors {
            assert_eq!(e.kind, ErrorKind::InvalidInput);
            assert_eq!(e.message, "input 'x' has 4 elements but its shape holds 6");
        }
        assert!(decode_grpc(grpc(true, vec![2, 3])).is_err());
    }

    #[test]
    fn rest_bodies_that_lie_about_sizes_are_refused() {
        let head = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
            "parameters": {"binary_data_size": u64::MAX}}]})
        .to_string();
        let len = head.len().to_string();
        let err = decode_rest("m".into(), None, Some(&len), head.as_bytes()).unwrap_err();
        assert!(
            err.message.contains("past the end of the body"),
            "{}",
            err.message
        );
        let err = decode_rest("m".into(), None, Some("99999"), b"{}").unwrap_err();
        assert!(
            err.message.contains("larger than the body"),
            "{}",
            err.message
        );
        // A huge claimed shape with little data: refused by the count, nothing reserved.
        let body = json!({"inputs": [{"name": "x", "shape": [1_000_000_000_000i64, 1000],
            "datatype": "FP32", "data": [1.0]}]})
        .to_string();
        let err = decode_rest("m".into(), None, None, body.as_bytes()).unwrap_err();
        assert!(err.message.contains("shape holds"), "{}", err.message);
        let body = json!({"inputs": [{"name": "x", "shape": [i64::MAX, i64::MAX],
            "datatype": "FP32", "data": [1.0]}]})
        .to_string();
        assert!(decode_rest("m".into(), None, None, body.as_bytes()).is_err());
    }

    const CASE_BOUND: Duration = Duration::from_secs(1);

    fn datatype() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("FP32".to_string()),
            Just("FP64".to_string()),
            Just("INT32".to_string()),
            Just("INT64".to_string()),
            Just("BOOL".to_string()),
            Just("BYTES".to_string()),
            "[A-Z0-9]{0,6}",
        ]
    }

    fn json_data() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|x| json!(x)),
            any::<f64>().prop_map(|x| json!(x)),
            "[a-zA-Z]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{1,3}", inner), 0..3)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes as a REST body, with or without a binary header: an answer, never a panic,
        /// and fast.
        #[test]
        fn rest_decoding_never_panics_on_bytes(
            body in prop::collection::vec(any::<u8>(), 0..512),
            header in prop::option::of("[0-9 ]{0,6}"),
        ) {
            let t = Instant::now();
            let _ = decode_rest("m".into(), None, header.as_deref(), &body);
            prop_assert!(t.elapsed() < CASE_BOUND);
        }

        /// Well-formed JSON requests with arbitrary shapes, datatypes, data and parameters.
        #[test]
        fn rest_decoding_never_panics_on_requests(
            inputs in prop::collection::vec(
                ("[a-z]{0,3}", datatype(),
                 prop::collection::vec(prop_oneof![any::<i64>(), -4i64..6], 0..4),
                 json_data(), prop::option::of(any::<i64>())),
                0..4),
            tail in prop::collection::vec(any::<u8>(), 0..64),
            binary_output in any::<bool>(),
        ) {
            let inputs: Vec<Value> = inputs
                .into_iter()
                .map(|(name, dt, shape, data, bin)| match bin {
                    Some(size) => json!({"name": name, "datatype": dt, "shape": shape,
                        "parameters": {"binary_data_size": size}}),
                    None => json!({"name": name, "datatype": dt, "shape": shape, "data": data}),
                })
                .collect();
            let head = json!({"inputs": inputs, "parameters":
                {"binary_data_output": binary_output, "normalize": binary_output}}).to_string();
            let mut body = head.clone().into_bytes();
            body.extend_from_slice(&tail);
            let len = head.len().to_string();
            let t = Instant::now();
            if let Ok((req, _)) = decode_rest("m".into(), None, Some(&len), &body) {
                // Whatever decodes holds exactly what its shape says.
                for i in &req.v2.inputs {
                    let n = element_count(&i.shape).unwrap();
                    let got = match &i.values {
                        InputValues::Numeric(v) => v.len(),
                        InputValues::Bytes(v) => v.len(),
                    };
                    prop_assert_eq!(n, got);
                }
            }
            prop_assert!(t.elapsed() < CASE_BOUND);
        }

        /// Any bytes as a gRPC message: either protobuf refuses them or the decoder answers.
        #[test]
        fn grpc_decoding_never_panics_on_bytes(
            body in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let t = Instant::now();
            if let Ok(req) = pb::ModelInferRequest::decode(body.as_slice()) {
                let _ = decode_grpc(req);
            }
            prop_assert!(t.elapsed() < CASE_BOUND);
        }

        /// Structured gRPC requests: typed contents or raw bytes of any length, any shape.
        #[test]
        fn grpc_decoding_never_panics_on_requests(
            inputs in prop::collection::vec(
                (datatype(),
                 prop::collection::vec(prop_oneof![any::<i64>(), -4i64..6], 0..4),
                 prop::collection::vec(any::<f32>(), 0..16),
                 prop::collection::vec(any::<u8>(), 0..64)),
                0..4),
            use_raw in any::<bool>(),
            extra_raw in 0usize..2,
        ) {
            let mut raw = Vec::new();
            let wire: Vec<_> = inputs
                .into_iter()
                .map(|(dt, shape, fp32, bytes)| {
                    raw.push(bytes);
                    pb::model_infer_request::InferInputTensor {
                        name: "x".into(),
                        datatype: dt,
                        shape,
                        contents: (!use_raw).then(|| pb::InferTensorContents {
                            fp32_contents: fp32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                })
                .collect();
            raw.extend(std::iter::repeat_n(vec![0u8; 4], extra_raw));
            let req = pb::ModelInferRequest {
                model_name: "m".into(),
                inputs: wire,
                raw_input_contents: if use_raw { raw } else { vec![] },
                ..Default::default()
            };
            let t = Instant::now();
            let _ = decode_grpc(req);
            prop_assert!(t.elapsed() < CASE_BOUND);
        }
    }
}
