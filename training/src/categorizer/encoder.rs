//! Trainable BERT and DistilBERT sequence classifiers, with Hugging Face tensor names.
//!
//! Why not candle-transformers' models, which `infermesh_text::classifier` serves with:
//! their layer norm is a fused kernel without a backward pass (`apply_op3_no_bwd`), so no
//! gradient reaches anything below the last layer norm and only the head would train. These
//! are the same computations from differentiable primitives; the tests check that a
//! checkpoint written from them gives the same logits through `TextClassifier::load`.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use infermesh_text::classifier::{Architecture, ClassifierPooling};

use infermesh_model_core::rng::SplitMix64;

/// Training-time dropout where Hugging Face's BERT applies it: the embeddings' output, the
/// attention probabilities, each sublayer's output before its residual, and the pooled
/// features before the classifier. Masks come from a seeded generator (candle's CPU random
/// tensors cannot be seeded), so runs stay reproducible.
#[derive(Debug)]
pub struct Dropout {
    hidden: f64,
    attention: f64,
    rng: std::cell::RefCell<SplitMix64>,
}

impl Dropout {
    /// Drop probabilities for hidden states and attention probabilities (each in [0, 1)).
    pub fn new(hidden: f64, attention: f64, seed: u64) -> Self {
        Self {
            hidden,
            attention,
            rng: std::cell::RefCell::new(SplitMix64::new(seed)),
        }
    }

    /// `x` with each element zeroed with probability `p`, the rest scaled by `1 / (1 - p)`.
    fn apply(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - p;
        let scale = (1.0 / keep) as f32;
        let mut rng = self.rng.borrow_mut();
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| if rng.next_f64() < keep { scale } else { 0.0 })
            .collect();
        x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)
    }
}

fn dropout(x: Tensor, d: Option<&Dropout>, attention: bool) -> Result<Tensor> {
    match d {
        None => Ok(x),
        Some(d) => d.apply(&x, if attention { d.attention } else { d.hidden }),
    }
}

/// Layer normalisation over the last dimension, differentiable.
#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU: BERT's `"gelu"`.
    GeluErf,
    /// tanh-approximated GELU: BERT's `"gelu_approximate"`, and what candle's DistilBERT
    /// runs for `"gelu"`.
    GeluTanh,
    /// ReLU.
    Relu,
}

impl Activation {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::GeluErf => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
        }
    }
}

/// Shape of an encoder, in the terms both families share.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSpec {
    /// Which family (decides tensor names and the head).
    pub architecture: Architecture,
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Position embeddings (longest input).
    pub max_positions: usize,
    /// Token-type embeddings (BERT only).
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
    /// Feed-forward activation.
    pub activation: Activation,
    /// What the classifier layer reads.
    pub pooling: ClassifierPooling,
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    /// `bias` is additive, (n, 1, 1, len): 0 on real tokens, a large negative on padding.
    fn forward(&self, x: &Tensor, bias: &Tensor, d: Option<&Dropout>) -> Result<Tensor> {
        let (n, len, dim) = x.dims3()?;
        let hd = dim / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((n, len, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = (split(self.q.forward(x)?)? / (hd as f64).sqrt())?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?.broadcast_add(bias)?;
        let weights = dropout(candle_nn::ops::softmax(&scores, D::Minus1)?, d, true)?;
        let ctx = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((n, len, dim))?
            .contiguous()?;
        self.out.forward(&ctx)
    }
}

/// One post-norm transformer layer (both families have this shape; names differ).
struct Layer {
    attention: Attention,
    attention_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    output_norm: LayerNorm,
    activation: Activation,
}

impl Layer {
    fn load(vb: VarBuilder, spec: &EncoderSpec) -> Result<Self> {
        let (d, i, eps) = (spec.hidden, spec.intermediate, spec.layer_norm_eps);
        let lin = candle_nn::linear;
        Ok(match spec.architecture {
            Architecture::Bert => {
                let a = vb.pp("attention");
                let s = a.pp("self");
                Layer {
                    attention: Attention {
                        q: lin(d, d, s.pp("query"))?,
                        k: lin(d, d, s.pp("key"))?,
                        v: lin(d, d, s.pp("value"))?,
                        out: lin(d, d, a.pp("output").pp("dense"))?,
                        heads: spec.heads,
                    },
                    attention_norm: LayerNorm::new(d, eps, a.pp("output").pp("LayerNorm"))?,
                    ffn_in: lin(d, i, vb.pp("intermediate").pp("dense"))?,
                    ffn_out: lin(i, d, vb.pp("output").pp("dense"))?,
                    output_norm: LayerNorm::new(d, eps, vb.pp("output").pp("LayerNorm"))?,
                    activation: spec.activation,
                }
            }
            Architecture::DistilBert => {
                let a = vb.pp("attention");
                Layer {
                    attention: Attention {
                        q: lin(d, d, a.pp("q_lin"))?,
                        k: lin(d, d, a.pp("k_lin"))?,
                        v: lin(d, d, a.pp("v_lin"))?,
                        out: lin(d, d, a.pp("out_lin"))?,
                        heads: spec.heads,
                    },
                    attention_norm: LayerNorm::new(d, eps, vb.pp("sa_layer_norm"))?,
                    ffn_in: lin(d, i, vb.pp("ffn").pp("lin1"))?,
                    ffn_out: lin(i, d, vb.pp("ffn").pp("lin2"))?,
                    output_norm: LayerNorm::new(d, eps, vb.pp("output_layer_norm"))?,
                    activation: spec.activation,
                }
            }
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor, d: Option<&Dropout>) -> Result<Tensor> {
        let a = dropout(self.attention.forward(x, bias, d)?, d, false)?;
        let x = self.attention_norm.forward(&(a + x)?)?;
        let f = self
            .ffn_out
            .forward(&self.activation.apply(&self.ffn_in.forward(&x)?)?)?;
        let f = dropout(f, d, false)?;
        self.output_norm.forward(&(f + x)?)
    }
}

/// A sequence classifier whose every weight trains.
pub struct TrainableClassifier {
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    /// BERT's pooler or DistilBERT's pre_classifier; `None` with mean pooling.
    pre_head: Option<Linear>,
    classifier: Linear,
    architecture: Architecture,
}

impl std::fmt::Debug for TrainableClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainableClassifier")
            .field("architecture", &self.architecture)
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

impl TrainableClassifier {
    /// Creates (with a `VarMap`-backed `vb`) or loads the weights under Hugging Face names:
    /// `bert.*` + `bert.pooler.dense` or `distilbert.*` + `pre_classifier` (neither with
    /// mean pooling), then `classifier` with `num_labels` outputs.
    pub fn new(vb: VarBuilder, spec: &EncoderSpec, num_labels: usize) -> Result<Self> {
        let d = spec.hidden;
        let enc = vb.pp(spec.architecture.prefix());
        let emb = enc.pp("embeddings");
        let word = candle_nn::embedding(spec.vocab_size, d, emb.pp("word_embeddings"))?;
        let position = candle_nn::embedding(spec.max_positions, d, emb.pp("position_embeddings"))?;
        let cls = spec.pooling == ClassifierPooling::Cls;
        let (token_type, layer_root, pre_head) = match spec.architecture {
            Architecture::Bert => (
                Some(candle_nn::embedding(
                    spec.type_vocab_size,
                    d,
                    emb.pp("token_type_embeddings"),
                )?),
                enc.pp("encoder").pp("layer"),
                cls.then(|| candle_nn::linear(d, d, enc.pp("pooler").pp("dense")))
                    .transpose()?,
            ),
            Architecture::DistilBert => (
                None,
                enc.pp("transformer").pp("layer"),
                cls.then(|| candle_nn::linear(d, d, vb.pp("pre_classifier")))
                    .transpose()?,
            ),
        };
        let embed_norm = LayerNorm::new(d, spec.layer_norm_eps, emb.pp("LayerNorm"))?;
        let layers = (0..spec.layers)
            .map(|i| Layer::load(layer_root.pp(i), spec))
            .collect::<Result<Vec<_>>>()?;
        let classifier = candle_nn::linear(d, num_labels, vb.pp("classifier"))?;
        Ok(Self {
            word,
            position,
            token_type,
            embed_norm,
            layers,
            pre_head,
            classifier,
            architecture: spec.architecture,
        })
    }

    /// Logits `(n, num_labels)` of padded `ids` `(n, len)` with `mask` `(n, len)` (u32, 1 on
    /// real tokens).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.classifier.forward(&self.features(ids, mask)?)
    }

    /// As [`Self::forward`], with dropout (training mode).
    pub fn forward_train(&self, ids: &Tensor, mask: &Tensor, d: &Dropout) -> Result<Tensor> {
        let pooled = dropout(self.features_with(ids, mask, Some(d))?, Some(d), false)?;
        self.classifier.forward(&pooled)
    }

    /// What the classifier layer reads: BERT's pooled `[CLS]` (`tanh(pooler(h0))`),
    /// DistilBERT's `relu(pre_classifier(h0))`, or the mean hidden state over the mask,
    /// `(n, hidden)`.
    pub fn features(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.features_with(ids, mask, None)
    }

    fn features_with(&self, ids: &Tensor, mask: &Tensor, d: Option<&Dropout>) -> Result<Tensor> {
        let (n, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let mut x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        if let Some(tt) = &self.token_type {
            x = x.broadcast_add(&tt.forward(&ids.zeros_like()?)?)?;
        }
        let mut x = dropout(self.embed_norm.forward(&x)?, d, false)?;
        // Padding gets -1e9 before the softmax: exp underflows to exactly 0, as with the
        // serving models' f32::MIN (BERT) or -inf fill (DistilBERT).
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((n, 1, 1, len))?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias, d)?;
        }
        let Some(pre_head) = &self.pre_head else {
            return infermesh_text::mean_pool(&x, mask);
        };
        let pooled = pre_head.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
        match self.architecture {
            Architecture::Bert => pooled.tanh(),
            Architecture::DistilBert => pooled.relu(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn dropout_zeroes_about_p_scales_the_rest_and_is_seeded() {
        let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
        let a = Dropout::new(0.25, 0.5, 7).apply(&x, 0.25).unwrap();
        let b = Dropout::new(0.25, 0.5, 7).apply(&x, 0.25).unwrap();
        let va: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, vb, "same seed, same mask");
        let zeros = va.iter().filter(|&&v| v == 0.0).count();
        assert!((2200..2800).contains(&zeros), "{zeros} of 10000 dropped");
        assert!(
            va.iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6)
        );
        let mean = va.iter().sum::<f32>() / va.len() as f32;
        assert!((mean - 1.0).abs() < 0.05, "{mean}");
        // p = 0 is the identity; other seeds give other masks.
        let same = Dropout::new(0.0, 0.0, 7).apply(&x, 0.0).unwrap();
        assert_eq!(
            same.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0; 10_000]
        );
        let c: Vec<f32> = Dropout::new(0.25, 0.5, 8)
            .apply(&x, 0.25)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_ne!(va, c);
    }
}
