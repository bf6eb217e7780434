//! Fits the lexical head ([`infermesh_text::lexical`]): the TF-IDF vocabulary of the training
//! texts, then a multinomial logistic regression on those sparse rows.
//!
//! The regression minimises scikit-learn's objective for `LogisticRegression(C,
//! class_weight="balanced")`: the class-weighted mean cross-entropy plus `|W|^2 / (2 C S)`
//! (`S` the sum of the row weights; the bias is not penalised). It is solved here with
//! L-BFGS over sparse rows, written by hand: linfa-logistic takes neither row weights nor
//! sparse features, and the dense problem (tens of thousands of n-gram columns) would be
//! slow. The objective is smooth and strictly convex in `W`, so L-BFGS with a backtracking
//! (Armijo) line search converges to its single optimum.

use std::collections::VecDeque;

use infermesh_text::lexical::{LexicalHead, SparseRow, TfIdf};

use super::CategorizerError;

/// Correction pairs L-BFGS keeps.
const HISTORY: usize = 8;
/// Iteration cap (scikit-learn's lbfgs stops at `max_iter`; the baseline sets 5000, and
/// these problems converge in a few hundred).
const MAX_ITER: usize = 2000;
/// Stop when the largest gradient component is below this.
const GTOL: f64 = 1e-6;

/// Fits the head on `texts` with labels `y` (ids into `labels`), balanced class weights,
/// inverse L2 strength `c`, and the blend weight `blend_weight`.
pub(crate) fn fit_head(
    texts: &[&str],
    y: &[u32],
    labels: &[String],
    c: f64,
    blend_weight: f32,
) -> Result<LexicalHead, CategorizerError> {
    let tfidf = TfIdf::fit(TfIdf::default_blocks(), texts)?;
    let rows: Vec<SparseRow> = texts.iter().map(|t| tfidf.transform(t)).collect();
    let weights = balanced_weights(y, labels.len());
    let (w, b) = fit_logistic(&rows, y, &weights, labels.len(), tfidf.len(), c);
    let w: Vec<f32> = w.iter().map(|&x| x as f32).collect();
    let b: Vec<f32> = b.iter().map(|&x| x as f32).collect();
    Ok(LexicalHead::new(
        tfidf,
        labels.to_vec(),
        &w,
        b,
        blend_weight,
        Some(c),
    )?)
}

/// scikit-learn's `class_weight="balanced"` per row: `n / (classes present * rows of the
/// row's class)`. The scale matters: with the L2 term fixed, scaling every row weight by `a`
/// is the same as fitting with `a * C`.
pub(crate) fn balanced_weights(y: &[u32], num_labels: usize) -> Vec<f64> {
    let mut counts = vec![0usize; num_labels];
    for &l in y {
        counts[l as usize] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let n = y.len() as f64;
    y.iter()
        .map(|&l| n / (present as f64 * counts[l as usize] as f64))
        .collect()
}

/// The objective and its gradient at `theta` = `[W (k x v, row-major), b (k)]`.
struct Problem<'a> {
    rows: &'a [SparseRow],
    y: &'a [u32],
    /// Row weights divided by their sum.
    scaled: Vec<f64>,
    /// `1 / (C S)`.
    l2: f64,
    k: usize,
    v: usize,
}

impl Problem<'_> {
    fn eval(&self, theta: &[f64], grad: &mut [f64]) -> f64 {
        let (k, v) = (self.k, self.v);
        let (w, b) = theta.split_at(k * v);
        grad.fill(0.0);
        let (gw, gb) = grad.split_at_mut(k * v);
        let mut loss = 0.0;
        let mut z = vec![0f64; k];
        for ((row, &yi), &si) in self.rows.iter().zip(self.y).zip(&self.scaled) {
            z.copy_from_slice(b);
            for &(j, x) in row {
                let x = f64::from(x);
                for (c, zc) in z.iter_mut().enumerate() {
                    *zc += w[c * v + j as usize] * x;
                }
            }
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|zc| (zc - max).exp()).sum();
            let lse = max + sum.ln();
            loss += si * (lse - z[yi as usize]);
            for (c, zc) in z.iter().enumerate() {
                let g = si * ((zc - lse).exp() - if c == yi as usize { 1.0 } else { 0.0 });
                gb[c] += g;
                for &(j, x) in row {
                    gw[c * v + j as usize] += g * f64::from(x);
                }
            }
        }
        let mut penalty = 0.0;
        for (g, wi) in gw.iter_mut().zip(w) {
            *g += self.l2 * wi;
            penalty += wi * wi;
        }
        loss + 0.5 * self.l2 * penalty
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Multinomial logistic regression on sparse `rows` (`v` features, `k` classes) with row
/// weights `weights` and scikit-learn's inverse L2 strength `c`; returns `W` (`k x v`,
/// row-major) and `b`.
pub(crate) fn fit_logistic(
    rows: &[SparseRow],
    y: &[u32],
    weights: &[f64],
    k: usize,
    v: usize,
    c: f64,
) -> (Vec<f64>, Vec<f64>) {
    let total: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let problem = Problem {
        rows,
        y,
        scaled: weights.iter().map(|w| w / total).collect(),
        l2: 1.0 / (c * total),
        k,
        v,
    };
    let dim = k * v + k;
    let mut theta = vec![0f64; dim];
    let mut grad = vec![0f64; dim];
    let mut f = problem.eval(&theta, &mut grad);
    let mut history: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(HISTORY);
    let mut next = vec![0f64; dim];
    let mut next_grad = vec![0f64; dim];
    for _ in 0..MAX_ITER {
        if grad.iter().all(|g| g.abs() < GTOL) {
            break;
        }
        // Two-loop recursion: direction = -H grad.
        let mut d: Vec<f64> = grad.iter().map(|g| -g).collect();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, yv, rho) in history.iter().rev() {
            let a = rho * dot(s, &d);
            d.iter_mut().zip(yv).for_each(|(di, yi)| *di -= a * yi);
            alphas.push(a);
        }
        let gamma = history
            .back()
            .map_or(1.0 / dot(&grad, &grad).sqrt().max(1.0), |(s, yv, _)| {
                dot(s, yv) / dot(yv, yv)
            });
        d.iter_mut().for_each(|di| *di *= gamma);
        for ((s, yv, rho), a) in history.iter().zip(alphas.into_iter().rev()) {
            let bcoef = rho * dot(yv, &d);
            d.iter_mut()
                .zip(s)
                .for_each(|(di, si)| *di += (a - bcoef) * si);
        }
        let mut slope = dot(&grad, &d);
        if slope >= 0.0 {
            // Not a descent direction (curvature lost to rounding): restart from steepest
            // descent.
            history.clear();
            d = grad.iter().map(|g| -g).collect();
            slope = -dot(&grad, &grad);
        }
        // Backtracking line search with the Armijo condition.
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            next.iter_mut()
                .zip(&theta)
                .zip(&d)
                .for_each(|((n, t), di)| *n = t + step * di);
            let f_next = problem.eval(&next, &mut next_grad);
            if f_next <= f + 1e-4 * step * slope {
                let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
                let yv: Vec<f64> = next_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &yv);
                if sy > 1e-12 {
                    if history.len() == HISTORY {
                        history.pop_front();
                    }
                    history.push_back((s, yv, 1.0 / sy));
                }
                std::mem::swap(&mut theta, &mut next);
                std::mem::swap(&mut grad, &mut next_grad);
                f = f_next;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    let b = theta.split_off(k * v);
    (theta, b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn balanced_weights_match_scikit_learn() {
        // compute_class_weight("balanced") = n / (classes * count): 6 / (2 * 4), 6 / (2 * 2).
        let w = balanced_weights(&[0, 0, 2, 0, 2, 0], 3);
        assert_eq!(w, [0.75, 0.75, 1.5, 0.75, 1.5, 0.75]);
    }

    /// Finite differences of the objective agree with its gradient, and at the fitted
    /// optimum the gradient vanishes.
    #[test]
    fn logistic_fit_reaches_the_optimum_of_the_weighted_objective() {
        let texts = [
            "coffee shop latte",
            "coffee beans store",
            "shell fuel station",
            "engen fuel",
            "fuel and coffee",
            "uber trip",
        ];
        let y = [0u32, 0, 1, 1, 1, 2];
        let tfidf = TfIdf::fit(TfIdf::default_blocks(), &texts).unwrap();
        let rows: Vec<SparseRow> = texts.iter().map(|t| tfidf.transform(t)).collect();
        let weights = [1.0, 1.0, 0.5, 0.5, 0.5, 2.0];
        let (k, v, c) = (3, tfidf.len(), 2.0);
        let (w, b) = fit_logistic(&rows, &y, &weights, k, v, c);
        let total: f64 = weights.iter().sum();
        let problem = Problem {
            rows: &rows,
            y: &y,
            scaled: weights.iter().map(|w| w / total).collect(),
            l2: 1.0 / (c * total),
            k,
            v,
        };
        let mut theta = w.clone();
        theta.extend(&b);
        let mut grad = vec![0.0; theta.len()];
        let f = problem.eval(&theta, &mut grad);
        let worst = grad.iter().fold(0f64, |m, g| m.max(g.abs()));
        assert!(worst < 1e-5, "gradient at the optimum {worst}");
        // Moving any coordinate raises the objective (a minimum, not a saddle).
        let mut scratch = vec![0.0; theta.len()];
        for i in [0, v / 2, k * v + 1] {
            for h in [-1e-3, 1e-3] {
                let mut t = theta.clone();
                t[i] += h;
                assert!(problem.eval(&t, &mut scratch) > f);
            }
        }
        // Gradient check at a point away from the optimum.
        let point: Vec<f64> = (0..theta.len())
            .map(|i| ((i % 7) as f64 - 3.0) * 0.1)
            .collect();
        problem.eval(&point, &mut grad);
        for i in [1, v + 3, k * v] {
            let (mut up, mut down) = (point.clone(), point.clone());
            up[i] += 1e-6;
            down[i] -= 1e-6;
            let numeric =
                (problem.eval(&up, &mut scratch) - problem.eval(&down, &mut scratch)) / 2e-6;
            assert!(
                (numeric - grad[i]).abs() < 1e-6,
                "{i}: {numeric} vs {}",
                grad[i]
            );
        }
        // The fitted model separates its training rows.
        let labels: Vec<String> = ["drinks", "fuel", "travel"].map(String::from).to_vec();
        let head = fit_head(&texts, &y, &labels, c, 0.5).unwrap();
        for (t, &yi) in texts.iter().zip(&y) {
            let logits = head.logits(t);
            assert_eq!(
                infermesh_text::classifier::argmax(&logits),
                yi as usize,
                "{t}"
            );
        }
    }
}
