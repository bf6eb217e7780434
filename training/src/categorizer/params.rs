//! Training parameters: [`TrainParams`] as given, [`TrainParams::check`] into a
//! [`TrainConfig`] that the trainer accepts (linfa's unchecked -> checked pattern).

use std::path::PathBuf;

use infermesh_text::classifier::ClassifierPooling;

/// Where the model's weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelInit {
    /// A BERT encoder in Hugging Face layout (`config.json`, `model.safetensors` with
    /// `embeddings.*` / `encoder.*` or `bert.*` names, `tokenizer.json`), such as
    /// all-MiniLM-L6-v2. Its pooler is used when present; the classifier head is new.
    Base {
        /// The encoder's directory.
        dir: PathBuf,
    },
    /// A small DistilBERT initialised by the trainer (seeded), with the tokenizer of
    /// `tokenizer_dir`.
    DistilBert {
        /// Transformer layers.
        layers: usize,
        /// Hidden width.
        hidden: usize,
        /// Attention heads (must divide `hidden`).
        heads: usize,
        /// Directory holding the `tokenizer.json` to use.
        tokenizer_dir: PathBuf,
    },
}

impl ModelInit {
    /// The default peak learning rate: small for a pretrained encoder, large for one
    /// trained from scratch.
    pub fn default_lr(&self) -> f64 {
        match self {
            ModelInit::Base { .. } => 5e-5,
            ModelInit::DistilBert { .. } => 1e-3,
        }
    }

    /// The directory holding `tokenizer.json`.
    pub fn tokenizer_dir(&self) -> &std::path::Path {
        match self {
            ModelInit::Base { dir } => dir,
            ModelInit::DistilBert { tokenizer_dir, .. } => tokenizer_dir,
        }
    }
}

/// How the new classifier layer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadInit {
    /// Class prototypes: each label's row is the centred mean of its training rows' pooled
    /// features (nearest-centroid logits before the first step), which helps labels with a
    /// handful of rows. Needs a pretrained encoder to mean anything.
    Prototype,
    /// Normal(0, 0.02), as Hugging Face initialises a new head.
    Random,
    /// A linear probe: multinomial logistic regression (class-weighted, L2
    /// [`TrainParams::probe_l2`]) fitted on the frozen encoder's pooled features. The probe
    /// alone is scored as epoch 0 and kept when no fine-tuning epoch beats it on validation;
    /// `epochs = 0` keeps it without fine-tuning (LP-FT, Kumar et al. 2022).
    Probe,
}

impl HeadInit {
    /// The `--head-init` name.
    pub fn as_str(self) -> &'static str {
        match self {
            HeadInit::Prototype => "prototype",
            HeadInit::Random => "random",
            HeadInit::Probe => "probe",
        }
    }
}

/// Parameters of a categoriser training run, unchecked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    /// CSV file with a header row.
    pub data: PathBuf,
    /// Column holding the texts.
    pub text_column: String,
    /// Column holding the labels.
    pub label_column: String,
    /// Where the weights come from.
    pub init: ModelInit,
    /// Output directory (created; files in it are overwritten).
    pub out: PathBuf,
    /// Maximum passes over the training rows (early stopping may end sooner).
    pub epochs: usize,
    /// Peak learning rate; `None` takes [`ModelInit::default_lr`].
    pub lr: Option<f64>,
    /// Rows per step.
    pub batch_size: usize,
    /// Longest input in tokens (longer texts are truncated).
    pub max_len: usize,
    /// Seed of the split, the shuffles and the new weights.
    pub seed: u64,
    /// Seed of the newly initialised weights (a random head, a pooler the base lacks, an
    /// `--init` model) when it must differ from `seed`, as for soup members, which share
    /// their start. `None`: `seed`.
    pub init_seed: Option<u64>,
    /// Share of each class held out for validation.
    pub val_fraction: f64,
    /// Epochs without a better validation macro-F1 before stopping.
    pub patience: usize,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Share of the steps over which the learning rate rises linearly from 0.
    pub warmup: f64,
    /// How the classifier layer starts.
    pub head_init: HeadInit,
    /// L2 strength of the linear probe (`l2 / 2 * |W|^2` added to the class-weighted mean
    /// cross-entropy; scikit-learn's `C` is `1 / (l2 * rows)`).
    pub probe_l2: f64,
    /// Dropout probability while training (hidden states and attention probabilities, as
    /// Hugging Face's `hidden_dropout_prob` / `attention_probs_dropout_prob`).
    pub dropout: f64,
    /// After early stopping picks the epoch count, train again on training + validation
    /// rows for that many epochs and keep that model. Always done when the probe alone is
    /// kept (epoch 0), which costs one frozen forward pass.
    pub refit: bool,
    /// What the classifier layer reads (`classifier_pooling` in `config.json`).
    pub pooling: ClassifierPooling,
    /// Models in the soup: train one per seed `seed, seed + 1, ...` and write the uniform
    /// average of their weights (1: a single model).
    pub soup: usize,
    /// Weight of the lexical head's log-probabilities in the blend with the classifier's (0:
    /// no lexical head; see [`infermesh_text::lexical`]).
    pub lexical_weight: f32,
    /// scikit-learn's `C` of the lexical head's logistic regression (inverse L2 strength,
    /// balanced class weights).
    pub lexical_c: f64,
    /// Draw a progress bar per epoch on stderr.
    pub progress: bool,
}

impl TrainParams {
    /// Defaults for everything but the data, columns, init and output: the plain fine-tune
    /// (no lexical head, random head). `infermesh train categorizer`'s defaults differ where
    /// its `--help` says so (a prototype head with `--base`, a lexical head at weight 0.5).
    pub fn new(
        data: PathBuf,
        text_column: impl Into<String>,
        label_column: impl Into<String>,
        init: ModelInit,
        out: PathBuf,
    ) -> Self {
        Self {
            data,
            text_column: text_column.into(),
            label_column: label_column.into(),
            init,
            out,
            epochs: 4,
            lr: None,
            batch_size: 32,
            max_len: 64,
            seed: 42,
            init_seed: None,
            val_fraction: 0.1,
            patience: 2,
            weight_decay: 0.01,
            warmup: 0.1,
            head_init: HeadInit::Random,
            probe_l2: 1e-4,
            refit: false,
            dropout: 0.0,
            pooling: ClassifierPooling::Cls,
            soup: 1,
            lexical_weight: 0.0,
            lexical_c: 10.0,
            progress: false,
        }
    }

    /// Validates the parameters into a [`TrainConfig`]. Files are checked when read.
    pub fn check(self) -> Result<TrainConfig, ParamsError> {
        let bad = |name: &'static str, reason: String| Err(ParamsError::Invalid { name, reason });
        if self.epochs == 0 && self.head_init != HeadInit::Probe {
            return bad(
                "epochs",
                "must be at least 1 (0 only with --head-init probe: the probe alone)".into(),
            );
        }
        if self.soup == 0 {
            return bad("soup", "must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.lexical_weight) {
            return bad(
                "lexical-weight",
                format!("must be in [0, 1), got {}", self.lexical_weight),
            );
        }
        if !(self.lexical_c.is_finite() && self.lexical_c > 0.0) {
            return bad("lexical-c", format!("must be > 0, got {}", self.lexical_c));
        }
        if !(self.probe_l2.is_finite() && self.probe_l2 >= 0.0) {
            return bad("probe-l2", format!("must be >= 0, got {}", self.probe_l2));
        }
        let lr = self.lr.unwrap_or_else(|| self.init.default_lr());
        if !(lr.is_finite() && lr > 0.0) {
            return bad("lr", format!("must be a positive number, got {lr}"));
        }
        if self.batch_size == 0 {
            return bad("batch-size", "must be at least 1".into());
        }
        if self.max_len < 3 {
            // [CLS], one token, [SEP].
            return bad(
                "max-len",
                format!("must be at least 3, got {}", self.max_len),
            );
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return bad(
                "val-fraction",
                format!("must be in (0, 1), got {}", self.val_fraction),
            );
        }
        if !(self.dropout >= 0.0 && self.dropout < 1.0) {
            return bad(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight-decay",
                format!("must be >= 0, got {}", self.weight_decay),
            );
        }
        if !(self.warmup >= 0.0 && self.warmup < 1.0) {
            return bad("warmup", format!("must be in [0, 1), got {}", self.warmup));
        }
        if self.text_column == self.label_column {
            return bad(
                "label-column",
                "must differ from the text column".to_string(),
            );
        }
        if let ModelInit::DistilBert {
            layers,
            hidden,
            heads,
            ..
        } = &self.init
        {
            if *layers == 0 {
                return bad("layers", "must be at least 1".into());
            }
            if *heads == 0 || *hidden == 0 || hidden % heads != 0 {
                return bad(
                    "hidden",
                    format!("must be a positive multiple of heads ({heads}), got {hidden}"),
                );
            }
        }
        Ok(TrainConfig { params: self, lr })
    }
}

/// Checked training parameters; only [`TrainParams::check`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    params: TrainParams,
    lr: f64,
}

impl TrainConfig {
    /// The parameters as given.
    pub fn params(&self) -> &TrainParams {
        &self.params
    }

    /// The peak learning rate (given or the init's default).
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// A soup member: another seed for the split and shuffles, the same initial weights.
    pub(crate) fn soup_member(&self, seed: u64) -> Self {
        let mut cfg = self.clone();
        cfg.params.init_seed = Some(self.params.init_seed.unwrap_or(self.params.seed));
        cfg.params.seed = seed;
        cfg
    }
}

/// A parameter is out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// `--name`: why.
    #[error("invalid --{name}: {reason}")]
    Invalid {
        /// The flag.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params() -> TrainParams {
        TrainParams::new(
            "d.csv".into(),
            "text",
            "label",
            ModelInit::DistilBert {
                layers: 2,
                hidden: 32,
                heads: 2,
                tokenizer_dir: "tok".into(),
            },
            "out".into(),
        )
    }

    #[test]
    fn defaults_check_and_pick_the_init_learning_rate() {
        let cfg = params().check().unwrap();
        assert_eq!(cfg.lr(), 1e-3);
        let mut p = params();
        p.init = ModelInit::Base { dir: "m".into() };
        assert_eq!(p.check().unwrap().lr(), 5e-5);
        // A probe may stand alone.
        let mut p = params();
        p.head_init = HeadInit::Probe;
        p.epochs = 0;
        assert!(p.check().is_ok());
    }

    /// Breaks one parameter.
    type Breaker = fn(&mut TrainParams);

    #[test]
    fn out_of_range_values_name_the_flag() {
        let cases: Vec<(Breaker, &str)> = vec![
            (|p| p.epochs = 0, "--epochs"),
            (|p| p.probe_l2 = f64::NAN, "--probe-l2"),
            (|p| p.soup = 0, "--soup"),
            (|p| p.lexical_weight = 1.0, "--lexical-weight"),
            (|p| p.lexical_c = 0.0, "--lexical-c"),
            (|p| p.lr = Some(-1.0), "--lr"),
            (|p| p.batch_size = 0, "--batch-size"),
            (|p| p.max_len = 2, "--max-len"),
            (|p| p.val_fraction = 1.0, "--val-fraction"),
            (|p| p.weight_decay = -0.1, "--weight-decay"),
            (|p| p.warmup = 1.0, "--warmup"),
            (|p| p.label_column = "text".into(), "--label-column"),
            (
                |p| {
                    p.init = ModelInit::DistilBert {
                        layers: 1,
                        hidden: 30,
                        heads: 4,
                        tokenizer_dir: "t".into(),
                    }
                },
                "--hidden",
            ),
        ];
        for (mutate, flag) in cases {
            let mut p = params();
            mutate(&mut p);
            let err = p.check().unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }
}
