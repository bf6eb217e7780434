//! Command-line flags of `infermesh train categorizer` and `infermesh eval categorizer`.

use std::path::PathBuf;

use infermesh_text::classifier::ClassifierPooling;

use super::params::HeadInit;
use super::{CategorizerError, EvalReport, ModelInit, TrainParams, TrainingReport};

/// Models `--init` can create from scratch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitKind {
    /// A small DistilBERT (`--layers`, `--hidden`, `--heads`).
    Distilbert,
}

/// An evaluation as a text table (what `infermesh eval categorizer` prints without `--json`).
pub fn format_report(r: &EvalReport) -> String {
    let mut out = format!(
        "n {}  accuracy {:.4}  macro-F1 {:.4}\n{:<40} {:>9} {:>9} {:>9} {:>8}\n",
        r.n, r.accuracy, r.macro_f1, "label", "precision", "recall", "f1", "support"
    );
    for c in &r.per_class {
        out.push_str(&format!(
            "{:<40} {:>9.4} {:>9.4} {:>9.4} {:>8}\n",
            c.label, c.precision, c.recall, c.f1, c.support
        ));
    }
    out
}

/// Flags of `infermesh train categorizer`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// CSV file with a header row holding the texts and labels.
    #[arg(long)]
    pub data: PathBuf,
    /// Column of --data holding the texts.
    #[arg(long)]
    pub text_column: String,
    /// Column of --data holding the labels.
    #[arg(long)]
    pub label_column: String,
    /// Start from this BERT encoder in Hugging Face layout (config.json, model.safetensors,
    /// tokenizer.json), e.g. all-MiniLM-L6-v2; the classifier head is new. Excludes --init;
    /// one of the two is needed (`train sentiment`: default the cached all-MiniLM-L6-v2).
    #[arg(long, conflicts_with = "init")]
    pub base: Option<PathBuf>,
    /// Start from a new, randomly initialised (seeded) model of this kind instead of --base;
    /// needs --tokenizer.
    #[arg(long, value_enum, requires = "tokenizer")]
    pub init: Option<InitKind>,
    /// With --init: directory holding the tokenizer.json to use.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// With --init: transformer layers. Default 2.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// With --init: hidden width (a multiple of --heads). Default 128.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// With --init: attention heads. Default 4.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Output directory: config.json, model.safetensors, tokenizer.json,
    /// training_report.json (overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Maximum fine-tuning passes over the training rows (early stopping may end sooner). 0,
    /// only with --head-init probe, keeps the probe alone: a logistic regression on the frozen
    /// encoder's sentence embeddings, fitted on every row (training and validation). Default 0 with --base (on the bank lines the frozen probe scored above
    /// fine-tuning; BENCHMARKS.md), 4 with --init.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Peak learning rate. Default 5e-5 with --base, 1e-3 with --init.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Rows per optimisation step. Default 32.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Longest input in tokens; longer texts are truncated. Default 64.
    #[arg(long, default_value_t = 64)]
    pub max_len: usize,
    /// Seed of the split, the shuffles and the new weights. Default 42.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of each class held out for validation (early stopping). Default 0.1.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Epochs without a better validation macro-F1 before stopping (0 = never stop early).
    /// Default 2.
    #[arg(long, default_value_t = 2)]
    pub patience: usize,
    /// AdamW decoupled weight decay. Default 0.01.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Share of the steps over which the learning rate rises linearly from 0 (then it decays
    /// linearly to 0). Default 0.1.
    #[arg(long, default_value_t = 0.1)]
    pub warmup: f64,
    /// How the new classifier layer starts: "prototype" (each label's row is the centred
    /// mean of its training rows' pooled features, so rare labels start reachable),
    /// "probe" (a class-weighted logistic regression fitted on the frozen encoder's pooled
    /// features, scored as epoch 0 and kept unless a fine-tuning epoch beats it on
    /// validation; pair it with --pooling mean for sentence encoders) or "random"
    /// (normal(0, 0.02), as Hugging Face). Default probe with --base, random with --init.
    #[arg(long, value_enum)]
    pub head_init: Option<HeadInitKind>,
    /// L2 strength of the --head-init probe (scikit-learn's C = 1 / (l2 * rows)). Default
    /// 1e-4.
    #[arg(long, default_value_t = 1e-4)]
    pub probe_l2: f64,
    /// After early stopping has chosen the number of epochs on the validation split, train
    /// again from the start on all rows (training + validation) for that many epochs and
    /// keep that model (about twice the time). Default off (a kept probe alone is always
    /// refitted on all rows).
    #[arg(long)]
    pub refit: bool,
    /// Dropout probability while training (hidden states, attention probabilities, pooled
    /// features, where Hugging Face's BERT applies its 0.1). Default 0: on the 451-line bank
    /// set 0.1 scored lower (BENCHMARKS.md).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// What the classifier layer reads: "cls" (the [CLS] token through BERT's pooler, as
    /// Hugging Face's BertForSequenceClassification) or "mean" (the mean hidden state, as
    /// sentence encoders such as MiniLM are trained to be read; written to config.json as
    /// `"classifier_pooling": "mean"`, which Hugging Face's BERT classes ignore). Default mean
    /// with --base (a sentence encoder such as all-MiniLM-L6-v2), cls with --init.
    #[arg(long, value_enum)]
    pub pooling: Option<PoolingKind>,
    /// Train this many models, with seeds --seed, --seed + 1, ... (each its own validation
    /// split, epoch choice and refit), and write the uniform average of their weights (a
    /// model soup, Wortsman et al. 2022); N times the training time. Default 1 (one model).
    #[arg(long, default_value_t = 1)]
    pub soup: usize,
    /// Weight of the lexical head blended with the classifier: TF-IDF of word 1-2 grams and
    /// character 2-5 grams into a class-weighted logistic regression, fitted on every row
    /// (training and validation), written as lexical.json + lexical.safetensors. The served
    /// probabilities are the weighted geometric mean, this weight on the lexical model's.
    /// Helps on texts named by merchants and codes (bank lines). 0 turns the head off.
    /// Default 0.5.
    #[arg(long, default_value_t = 0.5)]
    pub lexical_weight: f32,
    /// Inverse L2 strength (scikit-learn's C) of the lexical head's regression. Default 10.
    #[arg(long, default_value_t = 10.0)]
    pub lexical_c: f64,
}

/// `--pooling` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolingKind {
    /// The [CLS] token through the pooler.
    Cls,
    /// The mean hidden state over the attention mask.
    Mean,
}

/// `--head-init` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeadInitKind {
    /// Class prototypes from the base encoder's features.
    Prototype,
    /// Normal(0, 0.02).
    Random,
    /// Logistic regression on the frozen encoder's features.
    Probe,
}

impl TrainArgs {
    /// The flags as training parameters (progress bars on).
    pub fn into_params(self) -> Result<TrainParams, CategorizerError> {
        let init = match (self.base, self.init) {
            (Some(dir), None) => ModelInit::Base { dir },
            (None, Some(InitKind::Distilbert)) => ModelInit::DistilBert {
                layers: self.layers,
                hidden: self.hidden,
                heads: self.heads,
                tokenizer_dir: self.tokenizer.ok_or(super::ParamsError::Invalid {
                    name: "tokenizer",
                    reason: "required with --init".into(),
                })?,
            },
            _ => {
                return Err(super::ParamsError::Invalid {
                    name: "base",
                    reason: "give exactly one of --base and --init".into(),
                }
                .into());
            }
        };
        let mut p = TrainParams::new(
            self.data,
            self.text_column,
            self.label_column,
            init,
            self.out,
        );
        let base = matches!(p.init, ModelInit::Base { .. });
        p.epochs = self.epochs.unwrap_or(if base { 0 } else { 4 });
        p.lr = self.lr;
        p.batch_size = self.batch_size;
        p.max_len = self.max_len;
        p.seed = self.seed;
        p.val_fraction = self.val_fraction;
        p.patience = self.patience;
        p.weight_decay = self.weight_decay;
        p.warmup = self.warmup;
        p.head_init = match (self.head_init, base) {
            (Some(HeadInitKind::Prototype), _) => HeadInit::Prototype,
            (Some(HeadInitKind::Random), _) | (None, false) => HeadInit::Random,
            (Some(HeadInitKind::Probe), _) | (None, true) => HeadInit::Probe,
        };
        p.probe_l2 = self.probe_l2;
        p.soup = self.soup;
        p.lexical_weight = self.lexical_weight;
        p.lexical_c = self.lexical_c;
        p.refit = self.refit;
        p.dropout = self.dropout;
        p.pooling = match (self.pooling, base) {
            (Some(PoolingKind::Cls), _) | (None, false) => ClassifierPooling::Cls,
            (Some(PoolingKind::Mean), _) | (None, true) => ClassifierPooling::Mean,
        };
        p.progress = true;
        Ok(p)
    }

    /// Checks the flags and trains.
    pub fn run(self) -> Result<TrainingReport, CategorizerError> {
        let cfg = self.into_params()?.check()?;
        Ok(super::train(&cfg)?.report)
    }
}

/// Flags of `infermesh eval categorizer`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// CSV file with a header row holding the texts and labels.
    #[arg(long)]
    pub data: PathBuf,
    /// Column of --data holding the texts.
    #[arg(long)]
    pub text_column: String,
    /// Column of --data holding the labels.
    #[arg(long)]
    pub label_column: String,
    /// Directory of the trained classifier (as written by `infermesh train categorizer`).
    #[arg(long)]
    pub model: PathBuf,
    /// Print the scores as one JSON object (accuracy, macro_f1, per_class, n) instead of a
    /// table.
    #[arg(long)]
    pub json: bool,
    /// Also write every row's prediction to this CSV file (columns text, label, predicted,
    /// probability), for error analysis or a paired comparison with another model. Not written
    /// by default.
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
}

impl EvalArgs {
    /// Loads the model, scores it on the data and writes `--predictions` when given.
    pub fn run(&self) -> Result<EvalReport, CategorizerError> {
        let (report, rows, predicted) = super::evaluate_rows(
            &self.model,
            &self.data,
            &self.text_column,
            &self.label_column,
        )?;
        if let Some(path) = &self.predictions {
            super::write_predictions(path, &rows, &predicted)?;
        }
        Ok(report)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }

    /// The flags with a base encoder (`--base minilm`) and `extra`.
    fn parse(extra: &[&str]) -> TrainParams {
        let mut flags = vec!["--base", "minilm"];
        flags.extend(extra);
        parse_flags(&flags)
    }

    /// The required data flags and `flags`, as parameters.
    fn parse_flags(flags: &[&str]) -> TrainParams {
        try_params(flags).unwrap()
    }

    /// The required data flags and `flags`, parsed and turned into parameters.
    fn try_params(flags: &[&str]) -> Result<TrainParams, CategorizerError> {
        let mut argv = vec![
            "train",
            "--data",
            "d.csv",
            "--text-column",
            "text",
            "--label-column",
            "label",
            "--out",
            "out",
        ];
        argv.extend(flags);
        Cli::try_parse_from(argv).unwrap().args.into_params()
    }

    /// The defaults `--help` states, with a base encoder (what bench/categorizer.sh measures).
    #[test]
    fn defaults_are_the_documented_ones() {
        let p = parse(&[]);
        assert_eq!(p.lexical_weight, 0.5);
        assert_eq!(p.lexical_c, 10.0);
        assert_eq!(p.epochs, 0);
        assert_eq!(p.batch_size, 32);
        assert_eq!(p.patience, 2);
        assert!(!p.refit);
        assert_eq!(p.head_init, HeadInit::Probe);
        assert_eq!(p.pooling, ClassifierPooling::Mean);
        assert_eq!(p.check().unwrap().lr(), 5e-5);
        // Fine-tuning on request starts from the same probe and pooling.
        let p = parse(&["--epochs", "4"]);
        assert_eq!((p.epochs, p.head_init), (4, HeadInit::Probe));
    }

    /// A new model from scratch has no sentence embeddings to probe: it is trained.
    #[test]
    fn init_defaults_train_a_random_head_on_cls() {
        let p = parse_flags(&["--init", "distilbert", "--tokenizer", "tok"]);
        assert_eq!(p.epochs, 4);
        assert_eq!(p.head_init, HeadInit::Random);
        assert_eq!(p.pooling, ClassifierPooling::Cls);
        assert_eq!(p.check().unwrap().lr(), 1e-3);
    }

    /// The categoriser needs an encoder: neither --base nor --init is a clear error.
    #[test]
    fn no_base_and_no_init_is_refused_by_name() {
        let err = try_params(&[]).unwrap_err().to_string();
        assert!(err.contains("--base"), "{err}");
    }

    #[test]
    fn lexical_weight_zero_turns_the_head_off() {
        let p = parse(&["--lexical-weight", "0"]);
        assert_eq!(p.lexical_weight, 0.0);
        assert!(p.check().is_ok());
    }
}
