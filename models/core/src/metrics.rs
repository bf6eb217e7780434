//! Binary-classification metrics as scikit-learn defines them, so figures compare one for one
//! with what Python users compute: average precision (`average_precision_score`, the PR-AUC
//! of the model cards), ROC AUC (`roc_auc_score`, ties counted as half), and precision,
//! recall and F1 at a threshold (a score `>= threshold` is a positive), plus the choice of a
//! decision threshold on validation scores.

/// Why a metric cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// Scores and labels differ in length, or there are none.
    #[error("{0}")]
    Shape(String),
    /// Only one class is present (AUCs are undefined).
    #[error("only one class is present ({0} rows)")]
    OneClass(usize),
    /// A score is NaN.
    #[error("score {0} is NaN")]
    NaN(usize),
}

fn check(scores: &[f64], labels: &[bool]) -> Result<(usize, usize), MetricError> {
    if scores.len() != labels.len() || scores.is_empty() {
        return Err(MetricError::Shape(format!(
            "{} scores for {} labels",
            scores.len(),
            labels.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(MetricError::NaN(i));
    }
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(MetricError::OneClass(labels.len()));
    }
    Ok((pos, neg))
}

/// Indices by descending score.
fn order(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// Precision and recall at each distinct score, from the highest: `(threshold, tp, fp)`.
fn steps(scores: &[f64], labels: &[bool]) -> Vec<(f64, usize, usize)> {
    let idx = order(scores);
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0, 0);
    for (n, &i) in idx.iter().enumerate() {
        if labels[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = n + 1 == idx.len() || scores[idx[n + 1]] != scores[i];
        if last_of_tie {
            out.push((scores[i], tp, fp));
        }
    }
    out
}

/// Average precision: `sum_n (R_n - R_{n-1}) P_n` over the distinct thresholds, from the
/// highest (scikit-learn's `average_precision_score`, no interpolation).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let (pos, _) = check(scores, labels)?;
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (_, tp, fp) in steps(scores, labels) {
        let recall = tp as f64 / pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Ok(ap)
}

/// ROC AUC: the probability that a random positive scores above a random negative, ties
/// counting half (scikit-learn's `roc_auc_score`).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let (pos, neg) = check(scores, labels)?;
    // Trapezoids over the ROC curve's distinct-threshold points.
    let mut area = 0.0;
    let (mut prev_tp, mut prev_fp) = (0usize, 0usize);
    for (_, tp, fp) in steps(scores, labels) {
        area += (fp - prev_fp) as f64 * (tp + prev_tp) as f64 / 2.0;
        (prev_tp, prev_fp) = (tp, fp);
    }
    Ok(area / (pos as f64 * neg as f64))
}

/// Counts at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AtThreshold {
    /// The threshold (score `>=` it is a positive).
    pub threshold: f64,
    /// Precision (1 when nothing is predicted positive).
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1 (0 when precision and recall are 0).
    pub f1: f64,
    /// True positives.
    pub tp: usize,
    /// False positives.
    pub fp: usize,
    /// False negatives.
    pub fn_: usize,
}

/// Precision, recall and F1 at `threshold`.
pub fn at_threshold(
    scores: &[f64],
    labels: &[bool],
    threshold: f64,
) -> Result<AtThreshold, MetricError> {
    let (pos, _) = check(scores, labels)?;
    let (mut tp, mut fp) = (0, 0);
    for (&s, &l) in scores.iter().zip(labels) {
        if s >= threshold {
            if l {
                tp += 1;
            } else {
                fp += 1;
            }
        }
    }
    Ok(counts(threshold, tp, fp, pos))
}

fn counts(threshold: f64, tp: usize, fp: usize, pos: usize) -> AtThreshold {
    let precision = if tp + fp == 0 {
        1.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = tp as f64 / pos as f64;
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    AtThreshold {
        threshold,
        precision,
        recall,
        f1,
        tp,
        fp,
        fn_: pos - tp,
    }
}

/// How a decision threshold is chosen on validation scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdRule {
    /// The threshold with the highest F1 (the higher threshold on ties).
    MaxF1,
    /// The lowest threshold whose precision is at least this (the most recall at that
    /// precision); when none reaches it, the threshold with the highest precision.
    Precision(f64),
}

/// Chooses a threshold among the distinct scores by `rule`.
pub fn choose_threshold(
    scores: &[f64],
    labels: &[bool],
    rule: ThresholdRule,
) -> Result<AtThreshold, MetricError> {
    let (pos, _) = check(scores, labels)?;
    let points: Vec<AtThreshold> = steps(scores, labels)
        .into_iter()
        .map(|(t, tp, fp)| counts(t, tp, fp, pos))
        .collect();
    let best = match rule {
        ThresholdRule::MaxF1 => points
            .iter()
            .copied()
            .reduce(|a, b| if b.f1 > a.f1 { b } else { a }),
        ThresholdRule::Precision(target) => points
            .iter()
            .copied()
            .rfind(|p| p.precision >= target)
            .or_else(|| {
                points
                    .iter()
                    .copied()
                    .reduce(|a, b| if b.precision > a.precision { b } else { a })
            }),
    };
    best.ok_or(MetricError::Shape("no scores".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Expected values as scikit-learn 1.9 computes them (checked with it), on cases small
    // enough to check by hand.
    #[test]
    fn average_precision_matches_sklearn() {
        // sklearn: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8333...
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-12, "{ap}");
        // Ties share one step: scores all equal -> AP = prevalence.
        let ap = average_precision(&[0.5; 4], &[true, false, false, false]).unwrap();
        assert!((ap - 0.25).abs() < 1e-12);
    }

    #[test]
    fn roc_auc_matches_sklearn_with_ties() {
        // sklearn: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((auc - 0.75).abs() < 1e-12);
        // A tie between a positive and a negative counts half.
        let auc = roc_auc(&[0.5, 0.5, 0.9], &[false, true, true]).unwrap();
        assert!((auc - 0.75).abs() < 1e-12, "{auc}");
        // Perfect and inverted.
        assert_eq!(roc_auc(&[0.1, 0.9], &[false, true]).unwrap(), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.1], &[false, true]).unwrap(), 0.0);
    }

    #[test]
    fn thresholds_are_chosen_by_f1_or_precision() {
        let s = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3];
        let l = [true, true, false, true, false, true, false, false];
        let f1 = choose_threshold(&s, &l, ThresholdRule::MaxF1).unwrap();
        // At 0.5: tp 4, fp 2 -> P 2/3, R 1, F1 0.8 (best).
        assert_eq!(f1.threshold, 0.5);
        assert!((f1.f1 - 0.8).abs() < 1e-12);
        let p = choose_threshold(&s, &l, ThresholdRule::Precision(0.75)).unwrap();
        // At 0.7: tp 3, fp 1 -> P 0.75 (lowest threshold reaching it).
        assert_eq!(p.threshold, 0.7);
        assert_eq!((p.tp, p.fp, p.fn_), (3, 1, 1));
        let at = at_threshold(&s, &l, 0.7).unwrap();
        assert_eq!(at, p);
        // Unreachable precision: the most precise threshold.
        let p = choose_threshold(
            &s,
            &[false, true, true, true, true, true, true, true],
            ThresholdRule::Precision(1.0),
        )
        .unwrap();
        assert_eq!(p.threshold, 0.3);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            average_precision(&[0.1], &[true]),
            Err(MetricError::OneClass(1))
        ));
        assert!(matches!(roc_auc(&[], &[]), Err(MetricError::Shape(_))));
        assert!(matches!(
            roc_auc(&[0.1, f64::NAN], &[true, false]),
            Err(MetricError::NaN(1))
        ));
        assert!(matches!(
            at_threshold(&[0.1], &[true, false], 0.5),
            Err(MetricError::Shape(_))
        ));
    }
}
