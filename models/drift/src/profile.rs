//! Reference profiles: a reference table reduced, per column, to its distinct values and how
//! often each occurs (plus the missing ones), which is all any of the drift tests reads (K-S,
//! Wasserstein and the standard deviation depend on the sorted values with their
//! multiplicities, chi-square, Z, Jensen-Shannon and PSI on counts). So a drift run against a
//! profile gives the same numbers as against the table it came from, without rereading the
//! training set; for repeated values (categories, rounded amounts, small integers) the
//! profile is a fraction of the table.

use rustc_hash::FxHashMap as HashMap;

use crate::{Key, Values};

/// The column's pandas type, kept so that the reference side is cleaned and binned as the
/// table would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileDtype {
    /// float64.
    Float,
    /// int64.
    Int,
    /// bool.
    Bool,
    /// Strings.
    Str,
}

impl ProfileDtype {
    /// The name stored in a profile file.
    pub fn name(self) -> &'static str {
        match self {
            ProfileDtype::Float => "float64",
            ProfileDtype::Int => "int64",
            ProfileDtype::Bool => "bool",
            ProfileDtype::Str => "object",
        }
    }

    /// The inverse of [`ProfileDtype::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Float, Self::Int, Self::Bool, Self::Str]
            .into_iter()
            .find(|d| d.name() == name)
    }
}

/// One distinct value of a profiled column.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileValue {
    /// A float (finite or infinite).
    Float(f64),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
}

/// A column as distinct values with counts, sorted (numbers by value, strings by code point).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnProfile {
    /// Its pandas type.
    pub dtype: ProfileDtype,
    /// Distinct present values and their counts.
    pub values: Vec<(ProfileValue, u64)>,
    /// Missing values (NaN or null).
    pub missing: u64,
}

impl ColumnProfile {
    /// Profiles a column (`None` for a type the drift report leaves out).
    pub fn of(values: &Values) -> Option<Self> {
        let mut missing = 0u64;
        let (dtype, mut pairs): (ProfileDtype, Vec<(ProfileValue, u64)>) = match values {
            Values::Float(v) => {
                let mut counts: HashMap<u64, u64> = HashMap::default();
                for &x in v {
                    if x.is_nan() {
                        missing += 1;
                    } else {
                        // -0.0 and 0.0 are one value.
                        *counts.entry((x + 0.0).to_bits()).or_default() += 1;
                    }
                }
                (
                    ProfileDtype::Float,
                    counts
                        .into_iter()
                        .map(|(b, c)| (ProfileValue::Float(f64::from_bits(b)), c))
                        .collect(),
                )
            }
            Values::Int(v) => {
                let mut counts: HashMap<i64, u64> = HashMap::default();
                for &x in v {
                    *counts.entry(x).or_default() += 1;
                }
                (
                    ProfileDtype::Int,
                    counts
                        .into_iter()
                        .map(|(x, c)| (ProfileValue::Int(x), c))
                        .collect(),
                )
            }
            Values::Bool(v) => {
                let (mut t, mut f) = (0u64, 0u64);
                for b in v {
                    match b {
                        Some(true) => t += 1,
                        Some(false) => f += 1,
                        None => missing += 1,
                    }
                }
                let pairs = [(false, f), (true, t)]
                    .into_iter()
                    .filter(|&(_, c)| c > 0)
                    .map(|(b, c)| (ProfileValue::Bool(b), c))
                    .collect();
                (ProfileDtype::Bool, pairs)
            }
            Values::Str(v) => {
                let mut counts: HashMap<&str, u64> = HashMap::default();
                for s in v {
                    match s {
                        Some(s) => *counts.entry(s).or_default() += 1,
                        None => missing += 1,
                    }
                }
                (
                    ProfileDtype::Str,
                    counts
                        .into_iter()
                        .map(|(s, c)| (ProfileValue::Str(s.to_owned()), c))
                        .collect(),
                )
            }
            Values::Other { .. } => return None,
        };
        pairs.sort_by_cached_key(|a| key(&a.0));
        Some(Self {
            dtype,
            values: pairs,
            missing,
        })
    }

    /// The column back as values (each distinct value repeated by its count, missing ones
    /// last): the same multiset, so the same drift numbers.
    pub fn expand(&self) -> Values {
        let n = self.values.iter().map(|(_, c)| *c).sum::<u64>() + self.missing;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let repeat = |c: u64| 0..c;
        match self.dtype {
            ProfileDtype::Float | ProfileDtype::Int if self.missing > 0 => {
                let mut out = Vec::with_capacity(n);
                for (v, c) in &self.values {
                    let x = number(v);
                    out.extend(repeat(*c).map(|_| x));
                }
                out.extend(repeat(self.missing).map(|_| f64::NAN));
                Values::Float(out)
            }
            ProfileDtype::Float => {
                let mut out = Vec::with_capacity(n);
                for (v, c) in &self.values {
                    let x = number(v);
                    out.extend(repeat(*c).map(|_| x));
                }
                Values::Float(out)
            }
            ProfileDtype::Int => {
                let mut out = Vec::with_capacity(n);
                for (v, c) in &self.values {
                    let x = match v {
                        ProfileValue::Int(i) => *i,
                        other => number(other) as i64,
                    };
                    out.extend(repeat(*c).map(|_| x));
                }
                Values::Int(out)
            }
            ProfileDtype::Bool => {
                let mut out = Vec::with_capacity(n);
                for (v, c) in &self.values {
                    let b = matches!(v, ProfileValue::Bool(true));
                    out.extend(repeat(*c).map(|_| Some(b)));
                }
                out.extend(repeat(self.missing).map(|_| None));
                Values::Bool(out)
            }
            ProfileDtype::Str => {
                let mut out = Vec::with_capacity(n);
                for (v, c) in &self.values {
                    let s = match v {
                        ProfileValue::Str(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    out.extend(repeat(*c).map(|_| Some(s.clone())));
                }
                out.extend(repeat(self.missing).map(|_| None));
                Values::Str(out)
            }
        }
    }
}

fn number(v: &ProfileValue) -> f64 {
    match v {
        ProfileValue::Float(x) => *x,
        ProfileValue::Int(i) => *i as f64,
        ProfileValue::Bool(b) => f64::from(u8::from(*b)),
        ProfileValue::Str(_) => f64::NAN,
    }
}

fn key(v: &ProfileValue) -> Key {
    match v {
        ProfileValue::Float(x) => Key::Num(*x),
        ProfileValue::Int(i) => Key::Num(*i as f64),
        ProfileValue::Bool(b) => Key::Bool(*b),
        ProfileValue::Str(s) => Key::Str(s.as_str().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DriftOptions, data_drift};

    #[test]
    fn a_profile_gives_the_same_report_as_its_table() {
        let n = 2_000;
        let floats: Vec<f64> = (0..n)
            .map(|i| {
                if i % 17 == 0 {
                    f64::NAN
                } else {
                    (f64::from(i) * 0.37).sin() * 10.0
                }
            })
            .collect();
        let ints: Vec<i64> = (0..n).map(|i| i64::from(i % 40)).collect();
        let cats: Vec<Option<String>> = (0..n)
            .map(|i| (i % 9 != 0).then(|| format!("c{}", i % 5)))
            .collect();
        let bools: Vec<Option<bool>> = (0..n).map(|i| Some(i % 3 == 0)).collect();
        let reference = vec![
            ("f".to_owned(), Values::Float(floats.clone())),
            ("i".to_owned(), Values::Int(ints.clone())),
            ("s".to_owned(), Values::Str(cats.clone())),
            ("b".to_owned(), Values::Bool(bools)),
        ];
        let current = vec![
            (
                "f".to_owned(),
                Values::Float(floats.iter().map(|x| x + 0.3).collect()),
            ),
            (
                "i".to_owned(),
                Values::Int(ints.iter().map(|x| x / 2).collect()),
            ),
            (
                "s".to_owned(),
                Values::Str(cats.into_iter().rev().collect()),
            ),
            (
                "b".to_owned(),
                Values::Bool((0..n).map(|i| Some(i % 2 == 0)).collect()),
            ),
        ];
        let profiled: Vec<(String, Values)> = reference
            .iter()
            .map(|(n, v)| {
                let p = ColumnProfile::of(v).expect("profile");
                (n.clone(), p.expand())
            })
            .collect();
        for options in [
            DriftOptions::default(),
            DriftOptions {
                method: Some(crate::StatTest::Psi),
                ..DriftOptions::default()
            },
        ] {
            let a = data_drift(&reference, &current, &options).expect("table");
            let b = data_drift(&profiled, &current, &options).expect("profile");
            assert_eq!(a.columns.len(), 4);
            for ((na, ca), (nb, cb)) in a.columns.iter().zip(&b.columns) {
                assert_eq!(na, nb);
                assert_eq!(ca.stattest, cb.stattest);
                assert!(
                    (ca.drift_score - cb.drift_score).abs() < 1e-12,
                    "{na}: {} against {}",
                    ca.drift_score,
                    cb.drift_score
                );
            }
        }
    }

    #[test]
    fn repeated_values_shrink() {
        let v = Values::Int((0..10_000).map(|i| i % 7).collect());
        let p = ColumnProfile::of(&v).expect("profile");
        assert_eq!(p.values.len(), 7);
        assert_eq!(p.values[0], (ProfileValue::Int(0), 1429));
        assert_eq!(p.expand().len(), 10_000);
    }
}
