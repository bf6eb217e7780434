//! The crate's forward pass (`infermesh_llm::engine`) against candle's `quantized_llama` on the
//! real SmolLM2 file: the same logits within float rounding for f32 weights, the same
//! predictions for the quantized formats, and a prompt split into chunks (or fed token by
//! token) giving bit-identical logits to one pass.

mod common;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use infermesh_llm::Weights;
use infermesh_llm::engine::Engine;

/// Token ids of SmolLM2's vocabulary (any would do).
const PROMPT: [u32; 12] = [1, 9690, 198, 2683, 359, 253, 5356, 2, 198, 1, 4093, 198];

fn engine(weights: Weights) -> Engine {
    let path = common::smollm2_path();
    let mut file = std::fs::File::open(&path).expect("opens");
    let content = gguf_file::Content::read(&mut file).expect("parses");
    Engine::from_gguf(&content, &mut file, weights, 512).expect("loads")
}

/// candle's logits after every prefix of `PROMPT` (fed token by token), weights dequantized to
/// f32 when `f32`.
fn candle_logits(f32: bool) -> Vec<Vec<f32>> {
    let path = common::smollm2_path();
    let mut file = std::fs::File::open(&path).expect("opens");
    let content = gguf_file::Content::read(&mut file).expect("parses");
    let mut model = if f32 {
        // Re-encode every matrix as f32 in an in-memory GGUF, as `Weights::F32` does.
        let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
        names.sort();
        let tensors: Vec<_> = names
            .iter()
            .map(|n| {
                let t = content.tensor(&mut file, n, &Device::Cpu).expect("reads");
                let dense = t.dequantize(&Device::Cpu).expect("dequantizes");
                candle_core::quantized::QTensor::quantize(
                    &dense,
                    candle_core::quantized::GgmlDType::F32,
                )
                .expect("f32")
            })
            .collect();
        let metadata: Vec<_> = content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let named: Vec<_> = names
            .iter()
            .map(String::as_str)
            .zip(tensors.iter())
            .collect();
        let mut memory = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut memory, &metadata, &named).expect("writes");
        memory.set_position(0);
        let content = gguf_file::Content::read(&mut memory).expect("re-reads");
        ModelWeights::from_gguf(content, &mut memory, &Device::Cpu).expect("candle loads")
    } else {
        ModelWeights::from_gguf(content, &mut file, &Device::Cpu).expect("candle loads")
    };
    PROMPT
        .iter()
        .enumerate()
        .map(|(pos, &id)| {
            let input = Tensor::new(&[id], &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .expect("input");
            let logits = model.forward(&input, pos).expect("forward");
            logits
                .squeeze(0)
                .and_then(|l| l.to_vec1::<f32>())
                .expect("logits")
        })
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Our logits after every prefix of `PROMPT`, token by token.
fn stepwise(engine: &mut Engine) -> Vec<Vec<f32>> {
    PROMPT
        .iter()
        .enumerate()
        .map(|(pos, &id)| engine.forward(&[id], pos).expect("forward"))
        .collect()
}

#[test]
fn f32_weights_give_candles_logits() {
    let ours = stepwise(&mut engine(Weights::F32));
    let reference = candle_logits(true);
    for (pos, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert_eq!(a.len(), b.len());
        let spread = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(a, b);
        assert!(
            diff <= 2e-3 * spread.max(1.0),
            "position {pos}: {diff} of {spread}"
        );
        assert_eq!(argmax(a), argmax(b), "position {pos}");
    }
}

#[test]
fn stored_weights_predict_as_candle_does() {
    let ours = stepwise(&mut engine(Weights::AsStored));
    let reference = candle_logits(false);
    let mut agree = 0;
    for (pos, (a, b)) in ours.iter().zip(&reference).enumerate() {
        let spread = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // Both quantize activations per 32 values (candle with f16 scales, this crate f32).
        let diff = max_abs_diff(a, b);
        assert!(
            diff <= 0.1 * spread.max(1.0),
            "position {pos}: {diff} of {spread}"
        );
        agree += usize::from(argmax(a) == argmax(b));
    }
    assert!(
        agree + 1 >= PROMPT.len(),
        "{agree} of {} top tokens agree",
        PROMPT.len()
    );
}

#[test]
fn chunked_and_token_by_token_prompts_equal_one_pass_bit_for_bit() {
    for weights in [Weights::AsStored, Weights::Q8_0, Weights::F32] {
        let mut e = engine(weights);
        let whole = e.forward(&PROMPT, 0).expect("one pass");
        let steps = stepwise(&mut e);
        assert_eq!(&whole, steps.last().expect("steps"), "{weights:?}");
        // Chunks of 5, 5 and 2: the later chunks attend to the cached ones.
        let mut last = Vec::new();
        for (i, chunk) in PROMPT.chunks(5).enumerate() {
            last = e.forward(chunk, i * 5).expect("chunk");
        }
        assert_eq!(whole, last, "{weights:?}");
        // A new pass from position 0 starts afresh.
        assert_eq!(e.forward(&PROMPT, 0).expect("again"), whole, "{weights:?}");
    }
}

#[test]
fn bad_positions_and_token_ids_are_errors() {
    let mut e = engine(Weights::AsStored);
    assert!(e.forward(&[], 0).is_err());
    assert!(e.forward(&[1, 2], 0).is_ok());
    assert!(e.forward(&[3], 5).is_err(), "a gap in the cache");
    assert!(e.forward(&[u32::MAX], 2).is_err());
    assert!(
        e.forward(&vec![1; 600], 0).is_err(),
        "past the 512 positions"
    );
    assert_eq!(e.config().vocab, 49152);
}
