//! NumPy's legacy draws and order statistics, as scikit-learn and Evidently call them:
//! `RandomState` (MT19937 seeded by `init_genrand`, `rand_mt`'s `Mt`) with its
//! `permutation`, `randint`, `choice` and `rand`, and `np.median` / `np.percentile` (linear).
//! Written here: no crate reproduces NumPy's legacy sampling on top of MT19937.

use rand_mt::Mt;

/// NumPy's legacy `RandomState` draws (MT19937 seeded by `init_genrand`).
pub(crate) struct NpRandom(Mt);

impl NpRandom {
    /// `np.random.RandomState(seed)` / `np.random.seed(seed)`.
    pub(crate) fn new(seed: u32) -> Self {
        Self(Mt::new(seed))
    }

    fn masked(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16] {
            mask |= mask >> s;
        }
        loop {
            let v = self.0.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `permutation(n)` (Fisher-Yates from the end, `random_interval` draws).
    pub(crate) fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut a: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.masked(i as u32) as usize;
            a.swap(i, j);
        }
        a
    }

    /// `randint(low, high)` (high excluded) for ranges within 32 bits.
    pub(crate) fn randint(&mut self, low: u32, high: u32) -> u32 {
        low + self.masked(high - 1 - low)
    }

    /// `choice(n, size)` with replacement: `randint(0, n, size)`.
    pub(crate) fn choice(&mut self, n: usize, size: usize) -> Vec<usize> {
        (0..size)
            .map(|_| self.masked((n - 1) as u32) as usize)
            .collect()
    }

    /// `rand()`: 53-bit doubles from two draws.
    pub(crate) fn rand(&mut self) -> f64 {
        let a = self.0.next_u32() >> 5;
        let b = self.0.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) / 9_007_199_254_740_992.0
    }
}

/// `np.percentile(values, q)` with linear interpolation (NumPy's `_lerp`).
pub(crate) fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let t = pos - lo as f64;
    let (a, b) = (v[lo], v[hi]);
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// NumPy's median (the mean of the two middle values of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    let n = v.len();
    let mid = n / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let hi = *m;
    if n % 2 == 1 {
        return hi;
    }
    let lo = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo + hi) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_legacy_draws() {
        // np.random.RandomState(42).permutation(10) and np.random.seed(0); np.random.rand(3).
        assert_eq!(
            NpRandom::new(42).permutation(10),
            vec![8, 1, 5, 0, 7, 2, 9, 4, 3, 6]
        );
        let mut r = NpRandom::new(0);
        let got = [r.rand(), r.rand(), r.rand()];
        let want = [
            0.548_813_503_927_324_8,
            0.715_189_366_372_419_5,
            0.602_763_376_071_643_9,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{got:?}");
        }
        // np.random.RandomState(0).randint(0, 10, 5)
        let mut r = NpRandom::new(0);
        let got: Vec<u32> = (0..5).map(|_| r.randint(0, 10)).collect();
        assert_eq!(got, vec![5, 0, 3, 3, 7]);
    }

    #[test]
    fn percentile_and_median_follow_numpy() {
        let v = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        assert_eq!(median(v.to_vec()), 3.5);
        assert_eq!(median(vec![2.0, 7.0, 1.0]), 2.0);
        assert!((percentile(&v, 95.0) - 7.95).abs() < 1e-12);
        assert!((percentile(&v, 5.0) - 1.0).abs() < 1e-12);
    }
}
