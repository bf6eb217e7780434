//! What the tests read: a column's values once missing and infinite ones are dropped
//! ([`Sample`]), and values as dictionary keys ([`Key`]) for counting and ordering.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::Values;

/// A value as a dictionary key: numbers by value (an integer and the equal float are one
/// key, as in pandas), booleans, strings.
#[derive(Debug, Clone)]
pub enum Key {
    /// A number (-0.0 is 0.0).
    Num(f64),
    /// A boolean.
    Bool(bool),
    /// A string (shared: a column's repeated values are one allocation).
    Str(Arc<str>),
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Key::Num(v) => {
                0u8.hash(state);
                (if *v == 0.0 { 0.0f64 } else { *v }).to_bits().hash(state);
            }
            Key::Bool(b) => {
                1u8.hash(state);
                b.hash(state);
            }
            Key::Str(s) => {
                2u8.hash(state);
                s.hash(state);
            }
        }
    }
}

impl Key {
    /// The value as a plot label.
    pub fn label(&self) -> String {
        match self {
            Key::Num(v) => format!("{v}"),
            Key::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            Key::Str(s) => s.to_string(),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    /// Python's `sorted` within one kind (numbers by value, strings by code point); kinds
    /// in a fixed order.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Num(a), Key::Num(b)) => {
                let norm = |v: f64| if v == 0.0 { 0.0 } else { v };
                norm(*a).total_cmp(&norm(*b))
            }
            (Key::Bool(a), Key::Bool(b)) => a.cmp(b),
            (Key::Str(a), Key::Str(b)) => a.cmp(b),
            (Key::Num(_), _) => Ordering::Less,
            (_, Key::Num(_)) => Ordering::Greater,
            (Key::Bool(_), _) => Ordering::Less,
            (_, Key::Bool(_)) => Ordering::Greater,
        }
    }
}

pub(crate) fn clean_keys(values: &Values) -> Vec<Key> {
    match values {
        Values::Float(v) => v
            .iter()
            .filter(|x| !x.is_nan())
            .map(|&x| Key::Num(x))
            .collect(),
        Values::Int(v) => v.iter().map(|&x| Key::Num(x as f64)).collect(),
        Values::Bool(v) => v.iter().flatten().map(|&b| Key::Bool(b)).collect(),
        Values::Str(v) => {
            // One shared string per distinct value.
            let mut interned: HashMap<&str, Arc<str>> = HashMap::default();
            v.iter()
                .flatten()
                .map(|s| {
                    Key::Str(
                        interned
                            .entry(s.as_str())
                            .or_insert_with(|| Arc::from(s.as_str()))
                            .clone(),
                    )
                })
                .collect()
        }
        Values::Other { .. } => Vec::new(),
    }
}

/// A column's sample once missing and infinite values are dropped.
#[derive(Debug, Clone)]
pub enum Sample {
    /// Numbers (`integer`: every value came from an int64 column).
    Num {
        /// The values.
        values: Vec<f64>,
        /// Whether the column was int64.
        integer: bool,
    },
    /// Anything else, by value.
    Cat(Vec<Key>),
}

impl Sample {
    /// Drops NaN / null / ±inf; a numerical column must hold numbers (Err: its dtype).
    pub(crate) fn clean(values: &Values, numerical: bool) -> Result<Self, String> {
        match values {
            Values::Float(v) => Ok(Sample::Num {
                values: v.iter().copied().filter(|x| x.is_finite()).collect(),
                integer: false,
            }),
            Values::Int(v) => Ok(Sample::Num {
                values: v.iter().map(|&x| x as f64).collect(),
                integer: true,
            }),
            other if numerical => Err(other.dtype().to_owned()),
            other => Ok(Sample::Cat(clean_keys(other))),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Sample::Num { values, .. } => values.len(),
            Sample::Cat(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn numbers(&self) -> &[f64] {
        match self {
            Sample::Num { values, .. } => values,
            Sample::Cat(_) => &[],
        }
    }

    pub(crate) fn keys(&self) -> Box<dyn Iterator<Item = Key> + '_> {
        match self {
            Sample::Num { values, .. } => Box::new(values.iter().map(|&x| Key::Num(x))),
            Sample::Cat(v) => Box::new(v.iter().cloned()),
        }
    }

    /// Distinct values, counted up to `limit` (then `limit`).
    pub(crate) fn n_unique_up_to(&self, limit: usize) -> usize {
        distinct_up_to(self.keys(), limit)
    }
}

/// Distinct keys, counting stopped at `limit`.
pub(crate) fn distinct_up_to(keys: impl Iterator<Item = Key>, limit: usize) -> usize {
    let mut seen = HashSet::default();
    for k in keys {
        seen.insert(k);
        if seen.len() >= limit {
            break;
        }
    }
    seen.len()
}
