//! Clustering agreement, for tests and checks against the Python peers. The counts are kept in
//! ordered maps, so every sum runs in one order and a score is the same to the last bit on
//! every call (a hash map's order, and so its float sums, change from map to map).

use std::collections::BTreeMap;

/// The adjusted Rand index of two labellings of the same items (Hubert and Arabie 1985;
/// scikit-learn's `adjusted_rand_score`): 1 for identical partitions (up to renaming), about 0
/// for independent ones. Noise labels (`-1`) count as one more cluster, as scikit-learn
/// counts them.
pub fn adjusted_rand_index(a: &[i64], b: &[i64]) -> f64 {
    assert_eq!(a.len(), b.len(), "two labellings of the same items");
    let n = a.len() as f64;
    let pairs = |x: f64| x * (x - 1.0) / 2.0;
    let mut joint: BTreeMap<(i64, i64), f64> = BTreeMap::new();
    let mut rows: BTreeMap<i64, f64> = BTreeMap::new();
    let mut cols: BTreeMap<i64, f64> = BTreeMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *joint.entry((x, y)).or_default() += 1.0;
        *rows.entry(x).or_default() += 1.0;
        *cols.entry(y).or_default() += 1.0;
    }
    let index: f64 = joint.values().map(|&v| pairs(v)).sum();
    let sum_a: f64 = rows.values().map(|&v| pairs(v)).sum();
    let sum_b: f64 = cols.values().map(|&v| pairs(v)).sum();
    let expected = sum_a * sum_b / pairs(n).max(f64::MIN_POSITIVE);
    let max = (sum_a + sum_b) / 2.0;
    if max == expected {
        1.0
    } else {
        (index - expected) / (max - expected)
    }
}

/// The normalised mutual information of two labellings of the same items, with the
/// arithmetic mean of the entropies as the normaliser (scikit-learn's
/// `normalized_mutual_info_score` default): 1 for identical partitions (up to renaming), 0 for
/// independent ones; 1 when both put every item in one cluster. Noise labels (`-1`) count as
/// one more cluster, as in [`adjusted_rand_index`].
pub fn normalized_mutual_info(a: &[i64], b: &[i64]) -> f64 {
    assert_eq!(a.len(), b.len(), "two labellings of the same items");
    let n = a.len() as f64;
    let mut joint: BTreeMap<(i64, i64), f64> = BTreeMap::new();
    let mut rows: BTreeMap<i64, f64> = BTreeMap::new();
    let mut cols: BTreeMap<i64, f64> = BTreeMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *joint.entry((x, y)).or_default() += 1.0;
        *rows.entry(x).or_default() += 1.0;
        *cols.entry(y).or_default() += 1.0;
    }
    // scikit-learn: a single cluster on both sides (or no items) is a perfect match.
    if rows.len() == cols.len() && (rows.len() <= 1) {
        return 1.0;
    }
    let entropy =
        |m: &BTreeMap<i64, f64>| -> f64 { m.values().map(|&c| -(c / n) * (c / n).ln()).sum() };
    let mi: f64 = joint
        .iter()
        .map(|(&(x, y), &c)| (c / n) * ((c * n) / (rows[&x] * cols[&y])).ln())
        .sum();
    let (ha, hb) = (entropy(&rows), entropy(&cols));
    let norm = (ha + hb) / 2.0;
    if norm <= 0.0 {
        return 0.0;
    }
    (mi / norm).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_the_same_to_the_last_bit_on_every_call() {
        let a: Vec<i64> = (0..500).map(|i| (i * 7 % 23) as i64 - 1).collect();
        let b: Vec<i64> = (0..500).map(|i| (i * 11 % 17) as i64).collect();
        let (nmi, ari) = (normalized_mutual_info(&a, &b), adjusted_rand_index(&a, &b));
        for _ in 0..50 {
            assert_eq!(normalized_mutual_info(&a, &b).to_bits(), nmi.to_bits());
            assert_eq!(adjusted_rand_index(&a, &b).to_bits(), ari.to_bits());
        }
    }

    #[test]
    fn ari_matches_scikit_learn() {
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[5, 5, 7, 7]), 1.0);
        // sklearn.metrics.adjusted_rand_score([0, 0, 1, 1], [0, 0, 1, 2]) = 0.5714285714285715
        let v = adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]);
        assert!((v - 0.571_428_571_428_571_5).abs() < 1e-12, "{v}");
        // sklearn.metrics.adjusted_rand_score([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]) = -0.36363636363636365
        let v = adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 1, 2, 0, 1, 2]);
        assert!((v + 0.363_636_363_636_363_65).abs() < 1e-12, "{v}");
    }

    #[test]
    fn nmi_matches_scikit_learn() {
        assert!((normalized_mutual_info(&[0, 0, 1, 1], &[5, 5, 7, 7]) - 1.0).abs() < 1e-12);
        // sklearn.metrics.normalized_mutual_info_score([0, 0, 1, 1], [0, 0, 1, 2]) = 0.8
        let v = normalized_mutual_info(&[0, 0, 1, 1], &[0, 0, 1, 2]);
        assert!((v - 0.8).abs() < 1e-12, "{v}");
        // normalized_mutual_info_score([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]) = 0.0
        let v = normalized_mutual_info(&[0, 0, 0, 1, 1, 1], &[0, 1, 2, 0, 1, 2]);
        assert!(v.abs() < 1e-12, "{v}");
        // normalized_mutual_info_score([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, -1])
        // = 0.7396673768007592
        let v = normalized_mutual_info(&[0, 0, 1, 1, 2, 2], &[0, 0, 1, 1, 1, -1]);
        assert!((v - 0.739_667_376_800_759_2).abs() < 1e-9, "{v}");
        assert_eq!(normalized_mutual_info(&[3, 3], &[1, 1]), 1.0);
        // One side constant, the other not: no information shared.
        assert_eq!(normalized_mutual_info(&[0, 0, 0], &[0, 1, 2]), 0.0);
    }
}
