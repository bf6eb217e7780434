//! Classification metrics: accuracy, per-class precision / recall / F1 and macro-F1 over the
//! union of true and predicted labels (scikit-learn's convention, 0 where undefined).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Precision, recall and F1 of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// The label.
    pub label: String,
    /// Of the rows predicted as this label, the share that are.
    pub precision: f64,
    /// Of the rows with this label, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Rows with this label.
    pub support: usize,
}

/// Scores of a set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Share of rows predicted right.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1.
    pub macro_f1: f64,
    /// Per label, sorted by label.
    pub per_class: Vec<ClassMetrics>,
    /// Rows scored.
    pub n: usize,
}

/// Scores `predicted` against `truth` (same length). A true label the model does not know
/// can never be predicted, so it counts as an error and as a class with recall 0.
pub fn score<S: AsRef<str>, T: AsRef<str>>(truth: &[S], predicted: &[T]) -> EvalReport {
    let n = truth.len().min(predicted.len());
    let labels: BTreeSet<&str> = truth[..n]
        .iter()
        .map(AsRef::as_ref)
        .chain(predicted[..n].iter().map(AsRef::as_ref))
        .collect();
    let correct = (0..n)
        .filter(|&i| truth[i].as_ref() == predicted[i].as_ref())
        .count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class: Vec<ClassMetrics> = labels
        .iter()
        .map(|&label| {
            let (mut tp, mut pred, mut support) = (0, 0, 0);
            for i in 0..n {
                let (t, p) = (truth[i].as_ref() == label, predicted[i].as_ref() == label);
                tp += usize::from(t && p);
                pred += usize::from(p);
                support += usize::from(t);
            }
            let (precision, recall) = (ratio(tp, pred), ratio(tp, support));
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                label: label.to_string(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let macro_f1 = if per_class.is_empty() {
        0.0
    } else {
        per_class.iter().map(|c| c.f1).sum::<f64>() / per_class.len() as f64
    };
    EvalReport {
        accuracy: ratio(correct, n),
        macro_f1,
        per_class,
        n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_scores() {
        // a: tp 2, predicted 3, support 2 -> p 2/3, r 1, f1 0.8
        // b: tp 1, predicted 2, support 2 -> p 1/2, r 1/2, f1 1/2
        // c: (unknown to the model) tp 0, support 1 -> f1 0
        let truth = ["a", "a", "b", "b", "c"];
        let pred = ["a", "a", "a", "b", "b"];
        let r = score(&truth, &pred);
        assert_eq!(r.n, 5);
        assert!((r.accuracy - 0.6).abs() < 1e-12);
        assert!((r.per_class[0].f1 - 0.8).abs() < 1e-12);
        let b = &r.per_class[1];
        assert!((b.precision - 0.5).abs() < 1e-12 && (b.recall - 0.5).abs() < 1e-12);
        assert_eq!(r.per_class[2].f1, 0.0);
        assert!((r.macro_f1 - (0.8 + 0.5 + 0.0) / 3.0).abs() < 1e-12);
    }
}
