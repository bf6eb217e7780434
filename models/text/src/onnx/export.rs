//! Writes an ONNX graph of a BERT-family checkpoint straight from its `config.json` and
//! `model.safetensors`, so ONNX Runtime can serve the same weights candle does without any
//! Python export step (no torch, no `optimum`). Written by hand because no Rust crate builds
//! ONNX graphs; the messages are the subset in [`super::proto`].
//!
//! The graph is the Hugging Face BERT forward pass:
//!
//! * embeddings: word + position (`0..seq`) + token type 0, LayerNorm;
//! * per layer: self-attention with the additive mask `(1 - mask) * -10000`, output dense +
//!   residual + LayerNorm, intermediate dense + GELU (exact, erf) or ReLU, output dense +
//!   residual + LayerNorm;
//! * a head: sentence embedding (mean over the mask or CLS, as the sentence-transformers
//!   pooling config says; the caller normalises), or `BertForSequenceClassification`
//!   (`classifier(tanh(pooler.dense(h[CLS])))`, or `classifier(mean(h))` with
//!   `"classifier_pooling": "mean"`).
//!
//! Inputs are `input_ids` and `attention_mask`, int64 `[batch, seq]` with dynamic axes; the
//! output is `sentence_embedding` `[batch, hidden]` or `logits` `[batch, labels]`. Linear
//! layers are `MatMul` by the transposed weight then `Add` of the bias, the pattern ONNX
//! Runtime's graph optimiser fuses (opset 17, whose `LayerNormalization` is one node).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use prost::Message;
use serde::Deserialize;

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_type, data_type, tensor_shape_proto,
    type_proto,
};
use crate::classifier::ClassifierPooling;
use crate::{Pooling, TextError, read};

/// The additive attention mask value of padded positions (Hugging Face BERT's).
const MASK_FILL: f32 = -10_000.0;
/// ONNX Runtime's contrib-operator domain.
const MS_DOMAIN: &str = "com.microsoft";
/// ONNX opset (17 has `LayerNormalization`).
const OPSET: i64 = 17;
/// ONNX IR version that opset 17 pairs with.
const IR_VERSION: i64 = 8;

/// What the exported graph computes on top of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Pooled sentence vectors, not normalised (`sentence_embedding`, `[batch, hidden]`).
    SentenceEmbedding(Pooling),
    /// `BertForSequenceClassification` logits (`logits`, `[batch, labels]`), the classifier
    /// layer reading the pooled `[CLS]` or the mean hidden state.
    BertClassifier(ClassifierPooling),
}

impl Head {
    /// Name of the graph's output.
    pub fn output_name(self) -> &'static str {
        match self {
            Head::SentenceEmbedding(_) => "sentence_embedding",
            Head::BertClassifier(_) => "logits",
        }
    }
}

#[derive(Debug, Deserialize)]
struct BertGraphConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

fn invalid(what: &'static str, message: impl ToString) -> TextError {
    TextError::Invalid {
        what,
        message: message.to_string(),
    }
}

/// Writes the ONNX model of the BERT checkpoint in `dir` to `out`.
///
/// With `int8`, the encoder's linear layers are dynamically quantised: weights int8,
/// symmetric, one scale per output column, activations quantised per call (ONNX Runtime's
/// `com.microsoft.DynamicQuantizeMatMul`). Faster on CPUs with int8 dot products, at some
/// cost in fidelity (measured in BENCHMARKS.md); heads stay f32.
///
/// The weights are written one initialiser at a time, each freed once written, so the
/// export never holds a second copy of them (the encoded bytes beside the message, 87 MiB
/// more for MiniLM). The graph field comes last and its initialisers after its other
/// fields; protobuf readers accept fields in any order, so this decodes to the same
/// `ModelProto` as [`prost::Message::encode_to_vec`] would write.
pub fn write_bert(
    dir: &Path,
    head: Head,
    int8: bool,
    out: &mut impl std::io::Write,
) -> Result<(), TextError> {
    let config_bytes = read(&dir.join("config.json"))?;
    let config: BertGraphConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| invalid("config.json", e))?;
    let weights_path = dir.join("model.safetensors");
    if !weights_path.is_file() {
        return Err(TextError::Io {
            path: weights_path,
            message: "not found".into(),
        });
    }
    let weights = candle_core::safetensors::load(&weights_path, &Device::Cpu)
        .map_err(|e| invalid("model.safetensors", e))?;
    let model = build(&config, weights, head, int8)?;
    stream(model, out).map_err(write_error)
}

/// A failure to write the exported graph (to its temporary file, under the temp dir).
pub(crate) fn write_error(e: std::io::Error) -> TextError {
    TextError::Io {
        path: std::env::temp_dir(),
        message: format!("writing the exported graph: {e}"),
    }
}

/// Encodes `model` to `out` with the graph's initialisers last. Each initialiser's raw
/// bytes go to `out` as they are, not through an encoding buffer, and are freed once
/// written.
fn stream(mut model: ModelProto, out: &mut impl std::io::Write) -> std::io::Result<()> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, message};
    const GRAPH: u32 = 7; // ModelProto.graph
    const INITIALIZER: u32 = 5; // GraphProto.initializer
    const RAW_DATA: u32 = 9; // TensorProto.raw_data
    let mut graph = model.graph.take().unwrap_or_default();
    let inits = std::mem::take(&mut graph.initializer);
    // Field order does not change a message's length.
    let graph_len = graph.encoded_len()
        + inits
            .iter()
            .map(|t| message::encoded_len(INITIALIZER, t))
            .sum::<usize>();
    let mut buf = model.encode_to_vec();
    encode_key(GRAPH, WireType::LengthDelimited, &mut buf);
    encode_varint(graph_len as u64, &mut buf);
    graph.encode(&mut buf).map_err(std::io::Error::other)?;
    out.write_all(&buf)?;
    for mut init in inits {
        let raw = std::mem::take(&mut init.raw_data);
        // prost writes nothing for empty bytes; neither does this.
        let raw_field = if raw.is_empty() {
            0
        } else {
            1 + encoded_len_varint(raw.len() as u64) + raw.len()
        };
        buf.clear();
        encode_key(INITIALIZER, WireType::LengthDelimited, &mut buf);
        encode_varint((init.encoded_len() + raw_field) as u64, &mut buf);
        init.encode(&mut buf).map_err(std::io::Error::other)?;
        if !raw.is_empty() {
            encode_key(RAW_DATA, WireType::LengthDelimited, &mut buf);
            encode_varint(raw.len() as u64, &mut buf);
        }
        out.write_all(&buf)?;
        out.write_all(&raw)?;
    }
    out.flush()
}

fn build(
    config: &BertGraphConfig,
    weights: HashMap<String, Tensor>,
    head: Head,
    int8: bool,
) -> Result<ModelProto, TextError> {
    if config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Err(invalid(
            "config.json",
            format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            ),
        ));
    }
    if let Some(kind) = &config.position_embedding_type
        && kind != "absolute"
    {
        return Err(invalid(
            "config.json",
            format!("position_embedding_type {kind:?} is not supported (only \"absolute\")"),
        ));
    }
    let act = match config.hidden_act.as_str() {
        "gelu" => Activation::GeluErf,
        "relu" => Activation::Relu,
        other => {
            return Err(invalid(
                "config.json",
                format!("hidden_act {other:?} is not supported by the ONNX export (gelu, relu)"),
            ));
        }
    };
    let hidden = config.hidden_size as i64;
    let heads = config.num_attention_heads as i64;
    let head_dim = hidden / heads;
    let eps = config.layer_norm_eps as f32;
    let mut g = Builder::new(weights);
    g.int8 = int8;

    // Embeddings: word + position + token type, in the node pattern a PyTorch export of
    // Hugging Face BERT has (Shape/Gather/Slice position ids, ConstantOfShape token types),
    // which ONNX Runtime's embedding and attention fusions recognise.
    let shape = g.node("Shape", &["input_ids"], vec![]);
    let one = g.const_i64(&[], &[1]);
    let seq = g.node("Gather", &[&shape, &one], vec![attr_int("axis", 0)]); // scalar
    let axis0 = g.const_i64(&[1], &[0]);
    let seq1 = g.node("Unsqueeze", &[&seq, &axis0], vec![]); // [1]
    let max_pos = g.dims_of("embeddings.position_embeddings.weight")?[0];
    let all_pos: Vec<i64> = (0..max_pos).collect();
    let position_ids = g.const_i64(&[1, max_pos], &all_pos);
    let zero = g.const_i64(&[1], &[0]);
    let axis1 = g.const_i64(&[1], &[1]);
    let pos_ids = g.node("Slice", &[&position_ids, &zero, &seq1, &axis1], vec![]); // [1, seq]
    let type_ids = g.node(
        "ConstantOfShape",
        &[&shape],
        vec![attr_tensor(
            "value",
            TensorProto {
                dims: vec![1],
                data_type: data_type::INT64,
                name: "zero".into(),
                raw_data: 0i64.to_le_bytes().to_vec(),
                ..Default::default()
            },
        )],
    );
    let word_table = g.weight("embeddings.word_embeddings.weight", false)?;
    let word = g.node(
        "Gather",
        &[&word_table, "input_ids"],
        vec![attr_int("axis", 0)],
    );
    let type_table = g.weight("embeddings.token_type_embeddings.weight", false)?;
    let typ = g.node(
        "Gather",
        &[&type_table, &type_ids],
        vec![attr_int("axis", 0)],
    );
    let pos_table = g.weight("embeddings.position_embeddings.weight", false)?;
    let pos = g.node("Gather", &[&pos_table, &pos_ids], vec![attr_int("axis", 0)]);
    let sum = g.node("Add", &[&word, &typ], vec![]);
    let sum = g.node("Add", &[&sum, &pos], vec![]);
    let mut x = g.layer_norm(&sum, "embeddings.LayerNorm", eps)?;

    // The additive attention mask, [batch, 1, 1, seq].
    let m = g.node("Unsqueeze", &["attention_mask", &axis1], vec![]);
    let axis2 = g.const_i64(&[1], &[2]);
    let m = g.node("Unsqueeze", &[&m, &axis2], vec![]);
    let m = g.node("Cast", &[&m], vec![attr_int("to", data_type::FLOAT as i64)]);
    let one_f = g.const_f32(1.0);
    let m = g.node("Sub", &[&one_f, &m], vec![]);
    let fill = g.const_f32(MASK_FILL);
    let mask_add = g.node("Mul", &[&m, &fill], vec![]);

    let split = g.const_i64(&[4], &[0, 0, heads, head_dim]);
    let merge = g.const_i64(&[3], &[0, 0, hidden]);
    let scale = g.const_f32((head_dim as f32).sqrt());
    for i in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{i}.");
        let q = g.encoder_linear(&x, &format!("{p}attention.self.query"))?;
        let q = g.node("Reshape", &[&q, &split], vec![]);
        let q = g.node("Transpose", &[&q], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let k = g.encoder_linear(&x, &format!("{p}attention.self.key"))?;
        let k = g.node("Reshape", &[&k, &split], vec![]);
        let k = g.node("Transpose", &[&k], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = g.encoder_linear(&x, &format!("{p}attention.self.value"))?;
        let v = g.node("Reshape", &[&v, &split], vec![]);
        let v = g.node("Transpose", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let scores = g.node("MatMul", &[&q, &k], vec![]);
        let scores = g.node("Div", &[&scores, &scale], vec![]);
        let scores = g.node("Add", &[&scores, &mask_add], vec![]);
        let probs = g.node("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let ctx = g.node("MatMul", &[&probs, &v], vec![]);
        let ctx = g.node("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let ctx = g.node("Reshape", &[&ctx, &merge], vec![]);
        let attn = g.encoder_linear(&ctx, &format!("{p}attention.output.dense"))?;
        let res = g.node("Add", &[&attn, &x], vec![]);
        x = g.layer_norm(&res, &format!("{p}attention.output.LayerNorm"), eps)?;
        let h = g.encoder_linear(&x, &format!("{p}intermediate.dense"))?;
        let h = g.activation(&h, act);
        let out = g.encoder_linear(&h, &format!("{p}output.dense"))?;
        let res = g.node("Add", &[&out, &x], vec![]);
        x = g.layer_norm(&res, &format!("{p}output.LayerNorm"), eps)?;
    }

    let (out_name, width) = match head {
        Head::SentenceEmbedding(pooling) => {
            let pooled = match pooling {
                Pooling::Cls => g.cls(&x),
                Pooling::Mean => g.mean_pool(&x),
            };
            // Normalisation is the caller's (`crate::normalize`), so the pooled vector is
            // there for TEI's `normalize: false`.
            g.node_named(
                "Identity",
                &[&pooled],
                vec![],
                Head::SentenceEmbedding(pooling).output_name(),
            );
            (head.output_name(), hidden)
        }
        Head::BertClassifier(pooling) => {
            let pooled = match pooling {
                ClassifierPooling::Cls => {
                    let cls = g.cls(&x);
                    let pooled = g.linear(&cls, "pooler.dense")?;
                    g.node("Tanh", &[&pooled], vec![])
                }
                ClassifierPooling::Mean => g.mean_pool(&x),
            };
            let labels = g.dims_of("classifier.weight")?[0];
            let w = g.weight("classifier.weight", true)?;
            let mm = g.node("MatMul", &[&pooled, &w], vec![]);
            let b = g.weight("classifier.bias", false)?;
            g.node_named("Add", &[&mm, &b], vec![], head.output_name());
            (head.output_name(), labels)
        }
    };

    let dynamic = |name: &str, elem: i32, dims: &[Dim]| ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| tensor_shape_proto::Dimension {
                            value: Some(match d {
                                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                                Dim::Named(s) => {
                                    tensor_shape_proto::dimension::Value::DimParam(s.to_string())
                                }
                            }),
                        })
                        .collect(),
                }),
            })),
        }),
    };
    let tokens = [Dim::Named("batch"), Dim::Named("seq")];
    let graph = GraphProto {
        node: g.nodes,
        name: "infermesh-bert".into(),
        initializer: g.inits,
        input: vec![
            dynamic("input_ids", data_type::INT64, &tokens),
            dynamic("attention_mask", data_type::INT64, &tokens),
        ],
        output: vec![dynamic(
            out_name,
            data_type::FLOAT,
            &[Dim::Named("batch"), Dim::Fixed(width)],
        )],
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: std::iter::once(OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        })
        .chain(int8.then(|| OperatorSetIdProto {
            domain: MS_DOMAIN.into(),
            version: 1,
        }))
        .collect(),
        producer_name: "infermesh-text".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "BERT encoder exported from safetensors by infermesh-text".into(),
        graph: Some(graph),
    })
}

enum Dim {
    Fixed(i64),
    Named(&'static str),
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    Relu,
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::TENSOR,
        t: Some(t),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Accumulates nodes and initialisers; names values uniquely.
struct Builder {
    weights: HashMap<String, Tensor>,
    int8: bool,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    counter: usize,
}

impl Builder {
    fn new(weights: HashMap<String, Tensor>) -> Self {
        Self {
            weights,
            int8: false,
            nodes: Vec::new(),
            inits: Vec::new(),
            counter: 0,
        }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{}_{}", prefix.to_ascii_lowercase(), self.counter)
    }

    /// The checkpoint tensor `key`, with or without the `bert.` prefix of task checkpoints.
    fn tensor(&self, key: &str) -> Result<&Tensor, TextError> {
        self.weights
            .get(key)
            .or_else(|| self.weights.get(&format!("bert.{key}")))
            .ok_or_else(|| invalid("model.safetensors", format!("missing tensor {key}")))
    }

    /// Removes and returns the checkpoint tensor `key` (each is written once; dropping it
    /// as soon as it is copied keeps the export's peak memory near one copy of the weights).
    fn take(&mut self, key: &str) -> Result<Tensor, TextError> {
        self.weights
            .remove(key)
            .or_else(|| self.weights.remove(&format!("bert.{key}")))
            .ok_or_else(|| invalid("model.safetensors", format!("missing tensor {key}")))
    }

    fn dims_of(&self, key: &str) -> Result<Vec<i64>, TextError> {
        Ok(self.tensor(key)?.dims().iter().map(|&d| d as i64).collect())
    }

    fn push_f32(&mut self, name: String, t: &Tensor) -> Result<String, TextError> {
        let dims = t.dims().iter().map(|&d| d as i64).collect();
        let values = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| invalid("model.safetensors", e))?;
        self.inits.push(TensorProto {
            dims,
            data_type: data_type::FLOAT,
            name: name.clone(),
            raw_data: f32_bytes(&values),
            ..Default::default()
        });
        Ok(name)
    }

    /// A checkpoint tensor as an initialiser (transposed for `MatMul` when `transpose`).
    fn weight(&mut self, key: &str, transpose: bool) -> Result<String, TextError> {
        let t = self.take(key)?;
        let t = if transpose {
            t.t()
                .and_then(|t| t.contiguous())
                .map_err(|e| invalid("model.safetensors", e))?
        } else {
            t
        };
        let name = if transpose {
            format!("{key}.T")
        } else {
            key.to_string()
        };
        self.push_f32(name, &t)
    }

    fn const_f32(&mut self, value: f32) -> String {
        let name = self.fresh("const");
        self.inits.push(TensorProto {
            dims: vec![],
            data_type: data_type::FLOAT,
            name: name.clone(),
            raw_data: value.to_le_bytes().to_vec(),
            ..Default::default()
        });
        name
    }

    fn const_i64(&mut self, dims: &[i64], values: &[i64]) -> String {
        let name = self.fresh("const");
        self.inits.push(TensorProto {
            dims: dims.to_vec(),
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn node_named(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, out: &str) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: format!("{out}_node"),
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(op);
        self.node_named(op, inputs, attrs, &out);
        out
    }

    /// `x @ W^T + b` for the checkpoint's `{key}.weight` / `{key}.bias`.
    fn linear(&mut self, x: &str, key: &str) -> Result<String, TextError> {
        let w = self.weight(&format!("{key}.weight"), true)?;
        let b = self.weight(&format!("{key}.bias"), false)?;
        let mm = self.node("MatMul", &[x, &w], vec![]);
        Ok(self.node("Add", &[&mm, &b], vec![]))
    }

    /// An encoder linear layer: f32, or int8-quantised when the export asks for it.
    fn encoder_linear(&mut self, x: &str, key: &str) -> Result<String, TextError> {
        if !self.int8 {
            return self.linear(x, key);
        }
        let weight = self
            .take(&format!("{key}.weight"))?
            .t()
            .and_then(|t| t.contiguous())
            .map_err(|e| invalid("model.safetensors", e))?; // [in, out]
        let (rows, cols) = weight
            .dims2()
            .map_err(|e| invalid("model.safetensors", e))?;
        let values = weight
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| invalid("model.safetensors", e))?;
        let mut scales = vec![0f32; cols];
        for (i, v) in values.iter().enumerate() {
            let s = &mut scales[i % cols];
            *s = s.max(v.abs());
        }
        for s in &mut scales {
            *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
        }
        let quantized: Vec<u8> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (v / scales[i % cols]).round().clamp(-127.0, 127.0) as i8 as u8)
            .collect();
        let wq = format!("{key}.weight.T.int8");
        self.inits.push(TensorProto {
            dims: vec![rows as i64, cols as i64],
            data_type: data_type::INT8,
            name: wq.clone(),
            raw_data: quantized,
            ..Default::default()
        });
        let scale = format!("{key}.weight.T.scale");
        self.inits.push(TensorProto {
            dims: vec![cols as i64],
            data_type: data_type::FLOAT,
            name: scale.clone(),
            raw_data: f32_bytes(&scales),
            ..Default::default()
        });
        let zero = format!("{key}.weight.T.zero_point");
        self.inits.push(TensorProto {
            dims: vec![cols as i64],
            data_type: data_type::INT8,
            name: zero.clone(),
            raw_data: vec![0; cols],
            ..Default::default()
        });
        let bias = self.weight(&format!("{key}.bias"), false)?;
        let out = self.fresh("DynamicQuantizeMatMul");
        self.nodes.push(NodeProto {
            input: vec![x.into(), wq, scale, zero, bias],
            output: vec![out.clone()],
            name: format!("{out}_node"),
            op_type: "DynamicQuantizeMatMul".into(),
            attribute: vec![],
            domain: MS_DOMAIN.into(),
        });
        Ok(out)
    }

    fn layer_norm(&mut self, x: &str, key: &str, eps: f32) -> Result<String, TextError> {
        let w = self.weight(&format!("{key}.weight"), false)?;
        let b = self.weight(&format!("{key}.bias"), false)?;
        Ok(self.node(
            "LayerNormalization",
            &[x, &w, &b],
            vec![attr_int("axis", -1), attr_float("epsilon", eps)],
        ))
    }

    fn activation(&mut self, x: &str, act: Activation) -> String {
        match act {
            Activation::Relu => self.node("Relu", &[x], vec![]),
            Activation::GeluErf => {
                // x * 0.5 * (1 + erf(x / sqrt(2)))
                let sqrt2 = self.const_f32(std::f32::consts::SQRT_2);
                let d = self.node("Div", &[x, &sqrt2], vec![]);
                let e = self.node("Erf", &[&d], vec![]);
                let one = self.const_f32(1.0);
                let e = self.node("Add", &[&e, &one], vec![]);
                let m = self.node("Mul", &[x, &e], vec![]);
                let half = self.const_f32(0.5);
                self.node("Mul", &[&m, &half], vec![])
            }
        }
    }

    /// `h[:, 0, :]`.
    /// The mean of `x` `[batch, seq, hidden]` over `attention_mask`: `[batch, hidden]`.
    fn mean_pool(&mut self, x: &str) -> String {
        let axis2 = self.const_i64(&[1], &[2]);
        let mf = self.node(
            "Cast",
            &["attention_mask"],
            vec![attr_int("to", data_type::FLOAT as i64)],
        );
        let mf = self.node("Unsqueeze", &[&mf, &axis2], vec![]); // [batch, seq, 1]
        let axis1 = self.const_i64(&[1], &[1]);
        let masked = self.node("Mul", &[x, &mf], vec![]);
        let total = self.node(
            "ReduceSum",
            &[&masked, &axis1],
            vec![attr_int("keepdims", 0)],
        );
        let count = self.node("ReduceSum", &[&mf, &axis1], vec![attr_int("keepdims", 0)]);
        let tiny = self.const_f32(1e-9);
        let count = self.node("Max", &[&count, &tiny], vec![]);
        self.node("Div", &[&total, &count], vec![])
    }

    fn cls(&mut self, x: &str) -> String {
        let name = self.fresh("const");
        self.inits.push(TensorProto {
            dims: vec![],
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: 0i64.to_le_bytes().to_vec(),
            ..Default::default()
        });
        self.node("Gather", &[x, &name], vec![attr_int("axis", 1)])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tensor(name: &str, raw_data: Vec<u8>) -> TensorProto {
        TensorProto {
            dims: vec![raw_data.len() as i64],
            data_type: data_type::INT8,
            name: name.into(),
            raw_data,
            ..Default::default()
        }
    }

    /// The streamed bytes decode to the same message as prost's own encoding, with
    /// initialisers that are empty, small, and longer than one varint byte of length.
    #[test]
    fn streamed_model_decodes_to_the_built_one() {
        let model = ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "test".into(),
            producer_version: "1".into(),
            doc_string: "doc".into(),
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    input: vec!["a".into(), "b".into()],
                    output: vec!["c".into()],
                    name: "n".into(),
                    op_type: "Add".into(),
                    ..Default::default()
                }],
                name: "g".into(),
                initializer: vec![
                    tensor("empty", Vec::new()),
                    tensor("small", vec![1, 2, 3]),
                    tensor("long", (0..70_000u32).map(|i| (i % 251) as u8).collect()),
                ],
                input: Vec::new(),
                output: Vec::new(),
            }),
        };
        let mut streamed = Vec::new();
        stream(model.clone(), &mut streamed).unwrap();
        assert_eq!(streamed.len(), model.encoded_len());
        assert_eq!(ModelProto::decode(streamed.as_slice()).unwrap(), model);
    }
}
