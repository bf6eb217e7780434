//! Ranking metrics exactly as `lightfm.evaluation` defines them, so figures compare with
//! LightFM's one for one.
//!
//! For a user with test items, every item the user did not interact with in training is
//! ranked by score; the rank of a test item is the number of *other* such items scoring at
//! least as high (ties count against it; other test items count too), from 0.
//! * precision@k: test items with rank < k, divided by k;
//! * recall@k: the same count divided by the user's number of test items;
//! * AUC: with `n` = items - test items - train items of the user, and the test items' ranks
//!   sorted ascending, `mean_i(1 - (rank_i - i) / n)` (the `i` test items ranked above do not
//!   count as negatives); 1 when there is no negative.
//!
//! Each is averaged over the users that have test items.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::RecsError;
use crate::data::Csr;

/// Averages over the evaluated users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    /// The cut-off.
    pub k: usize,
    /// Mean precision@k.
    pub precision_at_k: f64,
    /// Mean recall@k.
    pub recall_at_k: f64,
    /// Mean AUC.
    pub auc: f64,
    /// Users with test items (the ones averaged).
    pub users: usize,
    /// Test interactions ranked.
    pub test_interactions: usize,
}

/// Ranks of the test items of one user (LightFM's `predict_rank` row).
pub fn test_ranks(scores: &[f32], train_row: &[u32], test_row: &[u32]) -> Vec<u32> {
    // Scores of the candidates (items not in training), ascending.
    let mut candidates: Vec<f32> = Vec::with_capacity(scores.len());
    let mut next = train_row.iter().peekable();
    for (i, &s) in scores.iter().enumerate() {
        if next.peek().is_some_and(|&&t| t as usize == i) {
            next.next();
            continue;
        }
        candidates.push(s);
    }
    candidates.sort_unstable_by(f32::total_cmp);
    test_row
        .iter()
        .map(|&t| {
            let s = scores[t as usize];
            let at_least = candidates.len() - candidates.partition_point(|&c| c < s);
            // The item itself is among the candidates (train and test are disjoint).
            at_least.saturating_sub(1) as u32
        })
        .collect()
}

/// Per-user precision, recall and AUC from the ranks of its test items.
pub fn user_metrics(
    ranks: &[u32],
    k: usize,
    items: usize,
    train_positives: usize,
) -> (f64, f64, f64) {
    let hits = ranks.iter().filter(|&&r| (r as usize) < k).count() as f64;
    let positives = ranks.len();
    let negatives = items as i64 - (positives + train_positives) as i64;
    let auc = if positives == 0 {
        0.5
    } else if negatives <= 0 {
        1.0
    } else {
        let mut sorted = ranks.to_vec();
        sorted.sort_unstable();
        let sum: f64 = sorted
            .iter()
            .enumerate()
            .map(|(i, &r)| 1.0 - (r as i64 - i as i64).max(0) as f64 / negatives as f64)
            .sum();
        sum / positives as f64
    };
    (hits / k as f64, hits / positives.max(1) as f64, auc)
}

/// Precision@k, recall@k and AUC of a scorer: `score(user, out)` writes every item's score
/// for `user` into `out`. `train` and `test` are users x items matrices of positives and
/// must not share a cell (LightFM's `check_intersections`).
pub fn evaluate(
    score: &(dyn Fn(usize, &mut Vec<f32>) + Sync),
    train: &Csr,
    test: &Csr,
    k: usize,
) -> Result<RankingMetrics, RecsError> {
    if k == 0 {
        return Err(RecsError::Invalid("k must be at least 1".into()));
    }
    if train.rows() != test.rows() || train.cols != test.cols {
        return Err(RecsError::Invalid(format!(
            "train is {} x {} but test is {} x {}",
            train.rows(),
            train.cols,
            test.rows(),
            test.cols
        )));
    }
    let overlap: usize = (0..test.rows())
        .map(|u| {
            test.row(u)
                .0
                .iter()
                .filter(|&&i| train.contains(u, i))
                .count()
        })
        .sum();
    if overlap > 0 {
        return Err(RecsError::Invalid(format!(
            "{overlap} test interactions are also training interactions"
        )));
    }
    let items = test.cols;
    let per_user: Vec<(f64, f64, f64)> = (0..test.rows())
        .into_par_iter()
        .filter(|&u| test.row_len(u) > 0)
        .map_init(Vec::new, |scores, u| {
            score(u, scores);
            let ranks = test_ranks(scores, train.row(u).0, test.row(u).0);
            user_metrics(&ranks, k, items, train.row_len(u))
        })
        .collect();
    let n = per_user.len().max(1) as f64;
    let mean = |f: fn(&(f64, f64, f64)) -> f64| per_user.iter().map(f).sum::<f64>() / n;
    Ok(RankingMetrics {
        k,
        precision_at_k: mean(|m| m.0),
        recall_at_k: mean(|m| m.1),
        auc: mean(|m| m.2),
        users: per_user.len(),
        test_interactions: test.nnz(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::Duplicates;

    #[test]
    fn ranks_skip_train_items_and_count_ties_against() {
        // Items 0..5; item 1 is a training item; test items 2 and 4.
        let scores = [0.9, 5.0, 0.5, 0.5, 0.7];
        let ranks = test_ranks(&scores, &[1], &[2, 4]);
        // Item 2 (0.5): items 0 (0.9), 3 (0.5, tie), 4 (0.7) -> 3. Item 4: item 0 -> 1.
        assert_eq!(ranks, vec![3, 1]);
    }

    #[test]
    fn user_metrics_follow_lightfm() {
        // 5 items, 2 test, 1 train: 2 negatives. Ranks 3 and 1 -> sorted [1, 3]:
        // (1 - 1/2) + (1 - (3 - 1)/2) = 0.5 + 0 -> 0.25.
        let (p, r, auc) = user_metrics(&[3, 1], 2, 5, 1);
        assert_eq!((p, r), (0.5, 0.5));
        assert!((auc - 0.25).abs() < 1e-12);
        // Perfect ranking of 2 positives among 10 items: AUC 1.
        assert_eq!(user_metrics(&[1, 0], 10, 10, 0).2, 1.0);
    }

    #[test]
    fn evaluate_averages_users_with_test_items_and_refuses_overlap() {
        let train = Csr::from_triplets(3, 4, &[(0, 0, 1.0)], Duplicates::Max).unwrap();
        let test = Csr::from_triplets(3, 4, &[(0, 1, 1.0), (2, 3, 1.0)], Duplicates::Max).unwrap();
        // Scores: item index as score, so higher items rank first.
        let score = |_u: usize, out: &mut Vec<f32>| {
            out.clear();
            out.extend((0..4).map(|i| i as f32));
        };
        let m = evaluate(&score, &train, &test, 1).unwrap();
        assert_eq!(m.users, 2);
        // User 0: item 1 has items 2, 3 above -> rank 2: p@1 0; user 2: item 3 rank 0: p@1 1.
        assert_eq!(m.precision_at_k, 0.5);
        assert_eq!(m.recall_at_k, 0.5);
        // User 0: negatives 4 - 1 - 1 = 2, AUC 1 - 2/2 = 0; user 2: 1.
        assert!((m.auc - 0.5).abs() < 1e-12);
        let bad = Csr::from_triplets(3, 4, &[(0, 0, 1.0)], Duplicates::Max).unwrap();
        assert!(evaluate(&score, &train, &bad, 1).is_err());
        assert!(evaluate(&score, &train, &test, 0).is_err());
    }
}
