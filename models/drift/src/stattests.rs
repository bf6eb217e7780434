//! Evidently 0.7's drift tests, each as its `evidently.legacy.calculations.stattests` module
//! computes it on two NaN-free samples, with the SciPy and NumPy functions they call written
//! out here: `chisquare`, the proportions Z-test, `wasserstein_distance` over the normalised
//! CDFs, `jensenshannon`, PSI, and `get_binned_data` (Sturges bins from
//! `np.histogram_bin_edges` over both samples for a numerical column with more than 20
//! values in the reference, otherwise one bin per value).
//!
//! Written here rather than taken from a statistics crate: what has to match is Evidently's
//! exact recipe (its bins, its zero filling, its normalisations), not the textbook test.
//! The chi-square and normal tails come from `statrs`.

use rustc_hash::FxHashMap as HashMap;

use statrs::function::erf::erfc;
use statrs::function::gamma::gamma_ur;

use crate::{Key, Sample};

/// Evidently's `_chi_stat_test`: Pearson's chi-square of the current counts against the
/// reference counts scaled to the current size, over the values of both; the p-value.
pub(crate) fn chisquare(reference: &Sample, current: &Sample) -> f64 {
    let (keys, ref_counts, cur_counts) = counts(reference, current);
    let k_norm = current.len() as f64 / reference.len() as f64;
    let mut stat = 0.0;
    for key in 0..keys.len() {
        let expected = ref_counts[key] as f64 * k_norm;
        let observed = cur_counts[key] as f64;
        let diff = observed - expected;
        // numpy: a value only in the current sample divides by 0 (inf; p = 0).
        stat += diff * diff / expected;
    }
    chi2_sf(stat, (keys.len() - 1) as f64)
}

/// `scipy.stats.chi2.sf`.
fn chi2_sf(x: f64, df: f64) -> f64 {
    if x.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    gamma_ur(df / 2.0, x / 2.0)
}

/// Evidently's `_z_stat_test`: the two-proportion Z-test on "is the first value or not"; 1
/// when both samples hold one and the same value.
pub(crate) fn z_test(reference: &Sample, current: &Sample) -> f64 {
    let (keys, ref_counts, cur_counts) = counts(reference, current);
    let ref_unique = ref_counts.iter().filter(|&&c| c > 0).count();
    let cur_unique = cur_counts.iter().filter(|&&c| c > 0).count();
    if keys.len() == 1 && ref_unique == 1 && cur_unique == 1 {
        return 1.0;
    }
    // Evidently maps the smallest value to 0 and every other to 1; |z| is the same whichever
    // value is singled out when there are two, and with more it needs the smallest.
    let first = (0..keys.len())
        .min_by(|&a, &b| keys[a].cmp(&keys[b]))
        .unwrap_or(0);
    let (n1, n2) = (reference.len() as f64, current.len() as f64);
    let p1 = (reference.len() - ref_counts[first]) as f64 / n1;
    let p2 = (current.len() - cur_counts[first]) as f64 / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    2.0 * (1.0 - normal_cdf(z.abs()))
}

/// `scipy.stats.norm.cdf`.
fn normal_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Evidently's `_wasserstein_distance_norm`: SciPy's first Wasserstein distance divided by
/// the reference's population standard deviation (at least 0.001).
pub(crate) fn wasserstein_norm(reference: &[f64], current: &[f64]) -> f64 {
    let norm = std_dev(reference).max(0.001);
    wasserstein(reference, current) / norm
}

/// NumPy's `std` (ddof 0).
pub(crate) fn std_dev(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mean = pairwise_sum(x) / n;
    let sq: Vec<f64> = x.iter().map(|v| (v - mean) * (v - mean)).collect();
    (pairwise_sum(&sq) / n).sqrt()
}

/// NumPy's summation order for a contiguous array: blocks of 8 partial sums up to 128
/// values, halves above (close enough to its rounding that sums agree to a few ulps).
fn pairwise_sum(x: &[f64]) -> f64 {
    if x.len() < 8 {
        return x.iter().sum();
    }
    if x.len() <= 128 {
        let mut r = [0.0f64; 8];
        let chunks = x.len() / 8 * 8;
        for c in x[..chunks].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(c) {
                *acc += v;
            }
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &x[chunks..] {
            s += v;
        }
        return s;
    }
    let half = x.len() / 2 / 8 * 8;
    pairwise_sum(&x[..half]) + pairwise_sum(&x[half..])
}

/// `scipy.stats.wasserstein_distance(u, v)`: the integral of `|U(x) - V(x)|` over the
/// pooled values.
pub(crate) fn wasserstein(u: &[f64], v: &[f64]) -> f64 {
    let mut us = u.to_vec();
    let mut vs = v.to_vec();
    us.sort_by(f64::total_cmp);
    vs.sort_by(f64::total_cmp);
    let all = merge_sorted(&us, &vs);
    let (nu, nv) = (us.len() as f64, vs.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut terms = Vec::with_capacity(all.len().saturating_sub(1));
    for w in all.windows(2) {
        let x = w[0];
        while i < us.len() && us[i] <= x {
            i += 1;
        }
        while j < vs.len() && vs[j] <= x {
            j += 1;
        }
        terms.push((i as f64 / nu - j as f64 / nv).abs() * (w[1] - w[0]));
    }
    pairwise_sum(&terms)
}

/// Two sorted slices merged into one sorted vector.
fn merge_sorted(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].total_cmp(&b[j]).is_le() {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Evidently's `_jensenshannon` (30 bins asked, Sturges used; no zero filling): SciPy's
/// `jensenshannon` distance, natural logarithm.
pub(crate) fn jensen_shannon(reference: &Sample, current: &Sample, numerical: bool) -> f64 {
    let (p, q) = binned(reference, current, numerical, false);
    let (sp, sq) = (pairwise_sum(&p), pairwise_sum(&q));
    let (mut left, mut right) = (Vec::with_capacity(p.len()), Vec::with_capacity(p.len()));
    for (&pi, &qi) in p.iter().zip(&q) {
        let (pi, qi) = (pi / sp, qi / sq);
        let m = (pi + qi) / 2.0;
        left.push(rel_entr(pi, m));
        right.push(rel_entr(qi, m));
    }
    let js = pairwise_sum(&left) + pairwise_sum(&right);
    (js / 2.0).sqrt()
}

/// `scipy.special.rel_entr`.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Evidently's `_psi`: `sum((ref% - cur%) ln(ref% / cur%))` over the bins, empty bins filled.
pub(crate) fn psi(reference: &Sample, current: &Sample, numerical: bool) -> f64 {
    let (p, q) = binned(reference, current, numerical, true);
    let terms: Vec<f64> = p
        .iter()
        .zip(&q)
        .map(|(&r, &c)| (r - c) * (r / c).ln())
        .collect();
    pairwise_sum(&terms)
}

/// Evidently's `get_binned_data`: the share of each sample per bin. A numerical column with
/// more than 20 distinct reference values is cut into Sturges bins over both samples;
/// anything else gets one bin per value. With `fill_zeroes` an empty bin gets a millionth of
/// the smallest non-empty share when that is at most 1e-4, else 1e-4.
pub(crate) fn binned(
    reference: &Sample,
    current: &Sample,
    numerical: bool,
    fill_zeroes: bool,
) -> (Vec<f64>, Vec<f64>) {
    let (mut p, mut q) = match sturges_bins(reference, current, numerical) {
        Some((r, c, edges)) => (
            histogram_share(r, &edges, reference.len()),
            histogram_share(c, &edges, current.len()),
        ),
        None => {
            let (_, rc, cc) = counts(reference, current);
            let (nr, nc) = (reference.len() as f64, current.len() as f64);
            (
                rc.iter().map(|&k| k as f64 / nr).collect(),
                cc.iter().map(|&k| k as f64 / nc).collect(),
            )
        }
    };
    if fill_zeroes {
        fill(&mut p);
        fill(&mut q);
    }
    (p, q)
}

/// Both samples' values and the Sturges edges over them, when `get_binned_data` bins (a
/// numerical column with more than 20 distinct reference values); `None`: one bin per value.
fn sturges_bins<'a>(
    reference: &'a Sample,
    current: &'a Sample,
    numerical: bool,
) -> Option<(&'a [f64], &'a [f64], Vec<f64>)> {
    match (reference, current) {
        (
            Sample::Num {
                values: r,
                integer: ri,
            },
            Sample::Num {
                values: c,
                integer: ci,
            },
        ) if numerical && reference.n_unique_up_to(21) > 20 => {
            Some((r, c, sturges_edges(r, c, *ri && *ci)))
        }
        _ => None,
    }
}

fn fill(shares: &mut [f64]) {
    let min = shares
        .iter()
        .copied()
        .filter(|&v| v != 0.0)
        .fold(f64::INFINITY, f64::min);
    let value = if min <= 1e-4 { min / 1e6 } else { 1e-4 };
    for v in shares.iter_mut().filter(|v| **v == 0.0) {
        *v = value;
    }
}

/// `np.histogram_bin_edges(concat(reference, current), bins="sturges")`: `ceil(ptp / width)`
/// equal bins with `width = ptp / (log2(n) + 1)` (at least 1 for integer data), edges by
/// `np.linspace`; a constant sample gets one bin of width 1 around it.
pub(crate) fn sturges_edges(reference: &[f64], current: &[f64], integer: bool) -> Vec<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in reference.iter().chain(current) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let ptp = hi - lo;
    let size = (reference.len() + current.len()) as f64;
    let (first, last) = if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let mut width = ptp / (size.log2() + 1.0);
    let bins = if width != 0.0 {
        if integer && width < 1.0 {
            width = 1.0;
        }
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    linspace(first, last, bins + 1)
}

/// `np.linspace(start, stop, num)` (endpoint included): `i * step + start`, the last value
/// exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut out: Vec<f64> = (0..num)
        .map(|i| {
            if step == 0.0 {
                i as f64 / div * delta + start
            } else {
                i as f64 * step + start
            }
        })
        .collect();
    if let Some(l) = out.last_mut() {
        *l = stop;
    }
    out
}

/// `np.histogram(x, edges)[0] / n`: bins closed on the left, the last also on the right;
/// values outside the edges are not counted.
fn histogram_share(x: &[f64], edges: &[f64], n: usize) -> Vec<f64> {
    let mut sorted = x.to_vec();
    sorted.sort_by(f64::total_cmp);
    let bins = edges.len() - 1;
    let mut cum = Vec::with_capacity(edges.len());
    for &e in &edges[..bins] {
        cum.push(sorted.partition_point(|&v| v < e));
    }
    cum.push(sorted.partition_point(|&v| v <= edges[bins]));
    cum.windows(2)
        .map(|w| (w[1] - w[0]) as f64 / n as f64)
        .collect()
}

/// The two samples' distributions for a plot: Sturges bins over both for a numerical column
/// of more than 20 distinct reference values (as Jensen-Shannon bins it), else one bar per
/// value (the 30 most frequent over both, the rest as one "other" bar). Shares of each
/// sample.
pub(crate) fn distribution(
    reference: &Sample,
    current: &Sample,
    numerical: bool,
) -> crate::Distribution {
    if let Some((r, c, edges)) = sturges_bins(reference, current, numerical) {
        let labels = edges
            .windows(2)
            .map(|w| format!("{} – {}", short(w[0]), short(w[1])))
            .collect();
        return crate::Distribution {
            labels,
            reference: histogram_share(r, &edges, reference.len()),
            current: histogram_share(c, &edges, current.len()),
        };
    }
    let (keys, rc, cc) = counts(reference, current);
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| {
        (rc[b] + cc[b])
            .cmp(&(rc[a] + cc[a]))
            .then(keys[a].cmp(&keys[b]))
    });
    let shown = order.len().min(30);
    let mut top: Vec<usize> = order[..shown].to_vec();
    top.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    let (nr, nc) = (reference.len() as f64, current.len() as f64);
    let mut out = crate::Distribution {
        labels: top.iter().map(|&k| keys[k].label()).collect(),
        reference: top.iter().map(|&k| rc[k] as f64 / nr).collect(),
        current: top.iter().map(|&k| cc[k] as f64 / nc).collect(),
    };
    if shown < order.len() {
        let rest = &order[shown..];
        out.labels.push(format!("other ({})", rest.len()));
        out.reference
            .push(rest.iter().map(|&k| rc[k]).sum::<usize>() as f64 / nr);
        out.current
            .push(rest.iter().map(|&k| cc[k]).sum::<usize>() as f64 / nc);
    }
    out
}

/// A bin edge for a label: four significant digits.
fn short(x: f64) -> String {
    if x == 0.0 || (1e-3..1e5).contains(&x.abs()) {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_owned()
    } else {
        format!("{x:.3e}")
    }
}

/// Counts per distinct value over both samples: (the values, reference counts, current
/// counts), indexed alike.
pub(crate) fn counts(reference: &Sample, current: &Sample) -> (Vec<Key>, Vec<usize>, Vec<usize>) {
    let mut index: HashMap<Key, usize> = HashMap::default();
    let mut keys = Vec::new();
    let mut rc = Vec::new();
    let mut cc = Vec::new();
    for (sample, is_ref) in [(reference, true), (current, false)] {
        for key in sample.keys() {
            let next = index.len();
            let i = *index.entry(key.clone()).or_insert(next);
            if i == rc.len() {
                keys.push(key);
                rc.push(0);
                cc.push(0);
            }
            if is_ref {
                rc[i] += 1;
            } else {
                cc[i] += 1;
            }
        }
    }
    (keys, rc, cc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_ends_exactly() {
        let e = linspace(0.1, 0.7, 4);
        assert_eq!(e[0], 0.1);
        assert_eq!(e[3], 0.7);
        assert!((e[1] - 0.3).abs() < 1e-15);
    }

    #[test]
    fn sturges_counts_bins_as_numpy() {
        // 8 values: log2(8) + 1 = 4 bins over [0, 7].
        let r = [0.0, 1.0, 2.0, 3.0];
        let c = [4.0, 5.0, 6.0, 7.0];
        let e = sturges_edges(&r, &c, false);
        assert_eq!(e, vec![0.0, 1.75, 3.5, 5.25, 7.0]);
        // Integer data: the width is at least 1.
        let e = sturges_edges(&[0.0, 1.0], &[2.0, 2.0], true);
        assert_eq!(e.len(), 3);
        // Constant data: one bin around the value.
        assert_eq!(sturges_edges(&[3.0], &[3.0], false), vec![2.5, 3.5]);
    }

    #[test]
    fn histogram_closes_the_last_bin() {
        let h = histogram_share(&[0.0, 1.0, 2.0, 2.0], &[0.0, 1.0, 2.0], 4);
        assert_eq!(h, vec![0.25, 0.75]);
    }

    #[test]
    fn wasserstein_of_shifted_samples_is_the_shift() {
        let u = [0.0, 1.0, 2.0];
        let v = [0.5, 1.5, 2.5];
        assert!((wasserstein(&u, &v) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn chi2_and_normal_tails() {
        // chi2.sf(3.841458820694124, 1) = 0.05; norm.cdf(1.959963984540054) = 0.975.
        assert!((chi2_sf(3.841_458_820_694_124, 1.0) - 0.05).abs() < 1e-12);
        let p = normal_cdf(1.959_963_984_540_054);
        assert!((p - 0.975).abs() < 1e-10, "{p}");
    }

    #[test]
    fn rel_entr_edges() {
        assert_eq!(rel_entr(0.0, 0.5), 0.0);
        assert_eq!(rel_entr(0.5, 0.0), f64::INFINITY);
        assert!((rel_entr(0.5, 0.25) - 0.5 * 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn pairwise_sum_is_a_sum() {
        let x: Vec<f64> = (0..1000).map(f64::from).collect();
        assert_eq!(pairwise_sum(&x), 499_500.0);
    }
}
