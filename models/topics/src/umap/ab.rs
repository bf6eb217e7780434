//! umap-learn's `find_ab_params`: the `a`, `b` of the low-dimensional similarity
//! `1 / (1 + a d^(2b))`, fitted by least squares (scipy's `curve_fit`, Levenberg–Marquardt
//! from `a = b = 1`) to `1` for `d < min_dist` and `exp(-(d - min_dist) / spread)` beyond,
//! on 300 points over `[0, 3 spread]`.

/// `(a, b)` for `spread` and `min_dist`, or `None` when the fit does not converge to finite
/// positive values.
pub(crate) fn find_ab_params(spread: f64, min_dist: f64) -> Option<(f64, f64)> {
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * spread * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            if x < min_dist {
                1.0
            } else {
                (-(x - min_dist) / spread).exp()
            }
        })
        .collect();
    let sse = |a: f64, b: f64| -> f64 {
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                let r = 1.0 / (1.0 + a * x.powf(2.0 * b)) - y;
                r * r
            })
            .sum()
    };
    let (mut a, mut b) = (1f64, 1f64);
    let mut lambda = 1e-3;
    let mut cost = sse(a, b);
    for _ in 0..500 {
        // Normal equations J^T J δ = -J^T r for the two parameters.
        let (mut jaa, mut jab, mut jbb, mut ga, mut gb) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for (&x, &y) in xs.iter().zip(&ys) {
            if x <= 0.0 {
                // f = 1 for any a, b: no gradient.
                continue;
            }
            let p = x.powf(2.0 * b);
            let den = 1.0 + a * p;
            let f = 1.0 / den;
            let r = f - y;
            let da = -p / (den * den);
            let db = -a * p * 2.0 * x.ln() / (den * den);
            jaa += da * da;
            jab += da * db;
            jbb += db * db;
            ga += da * r;
            gb += db * r;
        }
        let mut improved = false;
        for _ in 0..30 {
            let (maa, mbb) = (jaa * (1.0 + lambda), jbb * (1.0 + lambda));
            let det = maa * mbb - jab * jab;
            if det.abs() < f64::MIN_POSITIVE {
                lambda *= 10.0;
                continue;
            }
            let step_a = -(mbb * ga - jab * gb) / det;
            let step_b = -(maa * gb - jab * ga) / det;
            let (na, nb) = (a + step_a, b + step_b);
            let c = if na > 0.0 && nb > 0.0 {
                sse(na, nb)
            } else {
                f64::INFINITY
            };
            if c < cost {
                let done = (cost - c) <= 1e-15 * cost.max(1e-300)
                    && step_a.abs() < 1e-12
                    && step_b.abs() < 1e-12;
                a = na;
                b = nb;
                cost = c;
                lambda = (lambda / 10.0).max(1e-12);
                improved = !done;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    (a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0).then_some((a, b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn matches_umap_learns_fits() {
        // umap.umap_.find_ab_params(1.0, 0.0) and (1.0, 0.1), umap-learn 0.5.12 / scipy 1.17.
        for (min_dist, want_a, want_b) in [
            (0.0, 1.932_808_397_343_15, 0.790_494_973_223_383_1),
            (0.1, 1.576_943_460_269_765_2, 0.895_060_877_851_573_3),
        ] {
            let (a, b) = find_ab_params(1.0, min_dist).unwrap();
            assert!(
                (a - want_a).abs() < 1e-4,
                "min_dist {min_dist}: a {a} vs {want_a}"
            );
            assert!(
                (b - want_b).abs() < 1e-4,
                "min_dist {min_dist}: b {b} vs {want_b}"
            );
        }
    }
}
