//! The two-sample Kolmogorov–Smirnov test as SciPy's `ks_2samp` computes it (two-sided,
//! `method="auto"`), which is what Evidently's `ks` drift test calls: the statistic from the
//! two empirical CDFs; the exact p-value when both samples have at most 10,000 values
//! (Hodges' lattice-path count, computed as one minus the inside probability after Viehmann,
//! or the closed form for equal sizes); otherwise the one-sample Kolmogorov distribution at
//! `round(m n / (m + n))` (Simard and L'Ecuyer's choice of method per region: Ruben–Gambino
//! at the ends, Durbin's matrix as Marsaglia, Tsang and Wang compute it, the one-sided Smirnov
//! sum, Pelz–Good's series).
//!
//! Written here: no Rust crate computes the exact two-sample distribution, and matching SciPy
//! to 1e-6 means following its choices region by region. Where SciPy uses Pomeranz's
//! recursion (samples up to 140, `0.754693 < n x² <= 4`) this uses Durbin's matrix, which is
//! exact too; the two agree to rounding.

use statrs::function::gamma::ln_gamma;

/// Above this sample size `ks_2samp(method="auto")` switches to the asymptotic p-value.
const MAX_EXACT_N: usize = 10_000;

/// The statistic `D` and the two-sided p-value of the two-sample K–S test on two non-empty
/// samples (NaN-free; they are sorted here).
pub(crate) fn ks_2samp(reference: &[f64], current: &[f64]) -> (f64, f64) {
    let mut a = reference.to_vec();
    let mut b = current.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n1, n2) = (a.len(), b.len());
    let d = statistic(&a, &b);
    let g = gcd(n1, n2);
    let mut prob = f64::NAN;
    let mut exact = n1.max(n2) <= MAX_EXACT_N;
    let mut d_used = d;
    if exact {
        let lcm = (n1 / g) as f64 * n2 as f64;
        let h = round_half_even(d * lcm);
        d_used = h / lcm;
        if h == 0.0 {
            prob = 1.0;
        } else {
            // SciPy's h is an integer (its int(np.round(...))).
            let h = h as u64;
            prob = if n1 == n2 {
                prob_outside_square(n1 as u64, h)
            } else {
                outer_prob_inside(n1 as u64, n2 as u64, g as u64, h)
            };
            if !(0.0..=1.0).contains(&prob) {
                exact = false;
            }
        }
    }
    if !exact {
        let (m, n) = if n1 >= n2 {
            (n1 as f64, n2 as f64)
        } else {
            (n2 as f64, n1 as f64)
        };
        let en = round_half_even(m * n / (m + n));
        prob = kolmogorov_sf(en as u64, d_used);
    }
    (d_used, prob.clamp(0.0, 1.0))
}

/// `max |F1(x) - F2(x)|` over the pooled values (SciPy: the larger of the largest positive and
/// largest negative difference of `searchsorted(side="right") / n`).
fn statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut max_s, mut min_s) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < a.len() || j < b.len() {
        // The next pooled value; both CDFs are taken past every copy of it.
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max_s = max_s.max(diff);
        min_s = min_s.min(diff);
    }
    let min_s = (-min_s).clamp(0.0, 1.0);
    if min_s > max_s { min_s } else { max_s }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// NumPy's `round`: halves to even.
fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// Equal sizes: the probability that a lattice path leaves the square band (SciPy's
/// `_compute_prob_outside_square`).
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let mut p = 0.0f64;
    let mut k = (n / h) as i64;
    let (n, h) = (n as f64, h as i64);
    while k >= 0 {
        let mut p1 = 1.0f64;
        for j in 0..h {
            let (kh, j) = ((k * h) as f64, j as f64);
            p1 = (n - kh - j) * p1 / (n + kh + j + 1.0);
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// Unequal sizes: one minus the share of lattice paths from (0, 0) to (m, n) staying strictly
/// inside `|x/m - y/n| < h / lcm(m, n)`, column by column over a sliding window (SciPy's
/// `_compute_outer_prob_inside_method`).
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = (m / g, n / g);
    let (hf, mgf, ngf) = (h as f64, mg as f64, ng as f64);
    let mut minj: usize = 0;
    let mut maxj: usize = ((hf / mgf).ceil() as usize).min(n as usize + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n as usize + 1);
    let mut a = vec![1.0f64; len_a];
    for v in a.iter_mut().take(maxj).skip(minj) {
        *v = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        let lo = ((ngf * i as f64 - hf) / mgf).floor() as i64 + 1;
        minj = (lo.max(0) as usize).min(n as usize);
        maxj = (((ngf * i as f64 + hf) / mgf).ceil() as usize).min(n as usize + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        let fi = i as f64;
        for jj in 0..maxj - minj {
            let j = (jj + minj) as f64;
            val = (a[jj + minj - lastminj] * fi + val * j) / (fi + j);
            a[jj] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            for v in &mut a[maxj - minj..maxj - minj + (lastlen - curlen)] {
                *v = 1.0;
            }
        }
    }
    a[maxj - minj - 1]
}

/// `P(D_n >= x)` for the one-sample two-sided statistic (SciPy's `kstwo.sf`, `_kolmogn` with
/// `cdf=False`).
pub(crate) fn kolmogorov_sf(n: u64, x: f64) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    let nf = n as f64;
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let cdf = if n <= 140 {
            (1..=n).fold(1.0f64, |p, i| p * (i as f64 * (1.0 / nf) * (2.0 * t - 1.0)))
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        return (2.0 * (1.0 - x).powf(nf)).clamp(0.0, 1.0);
    }
    if x >= 0.5 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let nx2 = t * x;
    if n <= 140 {
        if nx2 <= 4.0 {
            return (1.0 - durbin_cdf(n, x)).clamp(0.0, 1.0);
        }
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    if nx2 >= 370.0 {
        return 0.0;
    }
    if nx2 >= 2.2 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let cdf = if nx2 >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        durbin_cdf(n, x)
    } else {
        pelz_good_cdf(nf, x)
    };
    (1.0 - cdf).clamp(0.0, 1.0)
}

/// `log(n! / n^n)` by Stirling's series with `n log n` taken out (SciPy's
/// `_log_nfactorial_div_n_pow_n`).
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    const STIRLING: [f64; 8] = [
        -2.955_065_359_477_124e-2,
        6.410_256_410_256_41e-3,
        -1.917_526_917_526_917_5e-3,
        8.417_508_417_508_417e-4,
        -5.952_380_952_380_952e-4,
        7.936_507_936_507_937e-4,
        -2.777_777_777_777_778e-3,
        8.333_333_333_333_333e-2,
    ];
    let rn = 1.0 / n;
    let x = rn / n;
    let poly = STIRLING.iter().fold(0.0, |acc, &c| acc * x + c);
    n.ln() / 2.0 - n + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * poly
}

/// `P(D_n <= d)` by Durbin's matrix: the k-th diagonal entry of `H^n` times `n!/n^n`, with
/// powers of two taken out as it grows (Marsaglia, Tsang and Wang 2003).
fn durbin_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powi(j as i32)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0f64;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;
    let mut hm = vec![0.0; m * m];
    for i in 1..m {
        for r in i - 1..m {
            hm[r * m + i] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    const E128: i32 = 128;
    let ep128 = 2f64.powi(E128);
    let mut pw = vec![0.0; m * m];
    for i in 0..m {
        pw[i * m + i] = 1.0;
    }
    let (mut nn, mut expnt, mut h_expnt) = (n, 0i32, 0i32);
    while nn > 0 {
        if nn % 2 == 1 {
            pw = matmul(&pw, &hm, m);
            expnt += h_expnt;
        }
        hm = matmul(&hm, &hm, m);
        h_expnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > ep128 {
            for x in &mut hm {
                *x /= ep128;
            }
            h_expnt += E128;
        }
        nn /= 2;
    }
    let mut p = pw[(k - 1) * m + (k - 1)];
    let em128 = 2f64.powi(-E128);
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < em128 {
            p *= ep128;
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p *= 2f64.powi(expnt);
    }
    p.clamp(0.0, 1.0)
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for i in 0..m {
        for l in 0..m {
            let x = a[i * m + l];
            if x != 0.0 {
                for j in 0..m {
                    out[i * m + j] += x * b[l * m + j];
                }
            }
        }
    }
    out
}

/// The one-sided Smirnov tail `P(D+_n >= x)` by the Birnbaum–Tingey sum, each term in
/// logarithms.
fn smirnov_sf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let last = (nf * (1.0 - x)).floor() as u64;
    let ln_n_fact = ln_gamma(nf + 1.0);
    let mut sum = 0.0f64;
    for j in 0..=last {
        let jf = j as f64;
        let a = 1.0 - x - jf / nf;
        let b = x + jf / nf;
        if a <= 0.0 {
            continue;
        }
        let ln_c = ln_n_fact - ln_gamma(jf + 1.0) - ln_gamma(nf - jf + 1.0);
        let term = ln_c + (nf - jf) * a.ln() + (jf - 1.0) * b.ln();
        sum += term.exp();
    }
    (x * sum).clamp(0.0, 1.0)
}

/// Pelz and Good's asymptotic series for `P(D_n <= x)` (SciPy's `_kolmogn_PelzGood`).
fn pelz_good_cdf(n: f64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let sqrt2pi = (2.0 * PI).sqrt();
    let z = n.sqrt() * x;
    let (z2, z3, z4, z6) = (z.powi(2), z.powi(3), z.powi(4), z.powi(6));
    let qlog = -pi2 / 8.0 / z2;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();
    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);
    let mut kk = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for k in (1..=maxk).rev() {
        let m = (2 * k - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf(8.0 * k as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (v, c) in kk.iter_mut().zip(coeffs) {
            *v = *v * qpower + c;
        }
    }
    let div = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (v, d) in kk.iter_mut().zip(div) {
        *v = *v * q * sqrt2pi / d;
    }
    let q = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for k in (1..=maxk).rev() {
        let kf = k as f64;
        let k2 = kf * kf;
        let qp = q.powf(k2);
        k2extra += k2 * qp;
        let kspi = PI * kf;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * k2 * qp;
    }
    kk[2] += k2extra * pi2 * sqrt2pi / (-36.0 * z3);
    kk[3] += k3extra * pi2 * sqrt2pi / (216.0 * z6);
    kk.iter()
        .enumerate()
        .map(|(i, v)| v / n.powf(i as f64 / 2.0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_samples_have_p_one() {
        let a: Vec<f64> = (0..50).map(f64::from).collect();
        let (d, p) = ks_2samp(&a, &a);
        assert_eq!(d, 0.0);
        assert_eq!(p, 1.0);
    }

    #[test]
    fn statistic_is_the_largest_cdf_gap() {
        // F1 jumps to 1 at 1, F2 at 2: the gap is 1 between them.
        let (d, p) = ks_2samp(&[1.0, 1.0, 1.0], &[2.0, 2.0, 2.0, 2.0]);
        assert_eq!(d, 1.0);
        // Exact: 2 / C(7, 3) (all of one sample below all of the other, either way).
        assert!((p - 2.0 / 35.0).abs() < 1e-12, "{p}");
    }

    #[test]
    fn equal_sizes_match_the_closed_form() {
        // n = 3, all of one below the other: 2 / C(6, 3) = 0.1.
        let (d, p) = ks_2samp(&[0.0, 1.0, 2.0], &[3.0, 4.0, 5.0]);
        assert_eq!(d, 1.0);
        assert!((p - 0.1).abs() < 1e-12, "{p}");
    }

    #[test]
    fn durbin_agrees_with_the_ruben_gambino_ends() {
        // Near t = 1 both Durbin's matrix and the closed form are exact.
        let n = 20;
        let x = 0.9 / n as f64;
        let closed = (1..=n).fold(1.0f64, |p, i| p * (i as f64 / n as f64) * (2.0 * 0.9 - 1.0));
        assert!((durbin_cdf(n, x) - closed).abs() < 1e-12);
    }

    #[test]
    fn the_tail_regions_join_up() {
        // Each region's method is continuous into the next within its accuracy.
        for n in [50u64, 200, 1000] {
            let mut last = 1.0;
            for i in 1..200 {
                let x = i as f64 / 400.0;
                let p = kolmogorov_sf(n, x);
                assert!(p <= last + 1e-4, "n {n} x {x}: {p} after {last}");
                last = p;
            }
        }
    }
}
