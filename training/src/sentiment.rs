//! `infermesh train sentiment` and `infermesh eval sentiment`: the local sentiment classifier,
//! trained by the categoriser's trainer ([`crate::categorizer`]) on sentiment labels as the
//! data names them (e.g. negative / positive / neutral).
//!
//! Sentiment is one more text classification, so it is the same model and the same defaults:
//! the class-weighted probe on the frozen sentence encoder's mean embedding, blended with the
//! TF-IDF lexical head. On the UCI sentiment-labelled sentences (3,000 rows, stratified 75/25
//! split, seed 0) that scores accuracy 0.907 against 0.816 for TF-IDF + logistic regression
//! and 0.892 for the probe alone (`bench/sentiment.sh`, BENCHMARKS.md). What differs from
//! `train categorizer`: `--base` defaults to the cached all-MiniLM-L6-v2, and the written
//! directory is what a model repository serves as platform `sentiment`.

use std::path::PathBuf;

use crate::categorizer::{CategorizerError, TrainArgs, TrainingReport};

/// The encoder `--base` defaults to: all-MiniLM-L6-v2 in the model cache.
pub fn default_base() -> PathBuf {
    infermesh_model_core::default_model_cache().join("all-MiniLM-L6-v2")
}

/// Flags of `infermesh train sentiment`: those of `infermesh train categorizer`, with
/// `--base` defaulting to `$INFERMESH_MODEL_CACHE/all-MiniLM-L6-v2` (the model cache is
/// `~/.cache/infermesh/models` unless set; `scripts/up.sh` and `scripts/test.sh` fill it).
#[derive(Debug, Clone, clap::Args)]
pub struct TrainSentimentArgs {
    /// The categoriser's flags.
    #[command(flatten)]
    pub args: TrainArgs,
}

impl TrainSentimentArgs {
    /// The categoriser's flags with the default base filled in (neither --base nor --init
    /// given).
    pub fn resolved(mut self) -> TrainArgs {
        if self.args.base.is_none() && self.args.init.is_none() {
            self.args.base = Some(default_base());
        }
        self.args
    }

    /// Checks the flags and trains.
    pub fn run(self) -> Result<TrainingReport, CategorizerError> {
        self.resolved().run()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::categorizer::ModelInit;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainSentimentArgs,
    }

    fn parse(extra: &[&str]) -> TrainArgs {
        let mut argv = vec![
            "sentiment",
            "--data",
            "reviews.csv",
            "--text-column",
            "text",
            "--label-column",
            "sentiment",
            "--out",
            "out",
        ];
        argv.extend(extra);
        Cli::try_parse_from(argv).unwrap().args.resolved()
    }

    #[test]
    fn base_defaults_to_the_cached_minilm_and_keeps_the_categoriser_defaults() {
        let args = parse(&[]);
        assert_eq!(args.base, Some(default_base()));
        assert!(default_base().ends_with("all-MiniLM-L6-v2"));
        let p = args.into_params().unwrap();
        assert!(matches!(p.init, ModelInit::Base { .. }));
        assert_eq!((p.epochs, p.lexical_weight), (0, 0.5));
    }

    #[test]
    fn a_given_base_or_init_wins() {
        assert_eq!(parse(&["--base", "enc"]).base, Some(PathBuf::from("enc")));
        let args = parse(&["--init", "distilbert", "--tokenizer", "tok"]);
        assert_eq!(args.base, None);
    }
}
