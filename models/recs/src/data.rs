//! The recommender's data: string ids mapped to dense indices, compressed sparse rows, the
//! interaction matrix and the feature matrices (LightFM's `Dataset` in a few types).

use std::collections::HashMap;

use crate::RecsError;

/// String ids and their dense indices, in first-seen order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl IdMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of `ids` in order; duplicates are an error.
    pub fn from_ids(ids: Vec<String>) -> Result<Self, RecsError> {
        let mut index = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            if index.insert(id.clone(), i as u32).is_some() {
                return Err(RecsError::Invalid(format!("id '{id}' appears twice")));
            }
        }
        Ok(Self { ids, index })
    }

    /// The index of `id`, adding it when new.
    pub fn insert(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), i);
        i
    }

    /// The index of `id`, if known.
    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The id at index `i`.
    pub fn id(&self, i: u32) -> &str {
        &self.ids[i as usize]
    }

    /// Every id, by index.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A compressed-sparse-row matrix of `f32` with column indices sorted within each row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Csr {
    /// Row `r` is `indices[indptr[r]..indptr[r + 1]]`.
    pub indptr: Vec<u32>,
    /// Column of each stored value.
    pub indices: Vec<u32>,
    /// Stored values.
    pub values: Vec<f32>,
    /// Number of columns.
    pub cols: usize,
}

/// How [`Csr::from_triplets`] merges repeated `(row, col)` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// Add them (feature weights).
    Sum,
    /// Keep the largest (an interaction seen twice is one interaction).
    Max,
}

impl Csr {
    /// The `n x n` identity.
    pub fn identity(n: usize) -> Self {
        Self {
            indptr: (0..=n as u32).collect(),
            indices: (0..n as u32).collect(),
            values: vec![1.0; n],
            cols: n,
        }
    }

    /// A `rows x cols` matrix of `(row, col, value)` triplets, repeated cells merged as `dup`
    /// says. Indices must be in range.
    pub fn from_triplets(
        rows: usize,
        cols: usize,
        triplets: &[(u32, u32, f32)],
        dup: Duplicates,
    ) -> Result<Self, RecsError> {
        if rows >= u32::MAX as usize
            || cols >= u32::MAX as usize
            || triplets.len() >= u32::MAX as usize
        {
            return Err(RecsError::Invalid("matrix too large".into()));
        }
        let mut sorted: Vec<(u32, u32, f32)> = triplets.to_vec();
        sorted.sort_unstable_by_key(|&(r, c, _)| (r, c));
        let mut indptr = vec![0u32; rows + 1];
        let mut indices = Vec::with_capacity(sorted.len());
        let mut values: Vec<f32> = Vec::with_capacity(sorted.len());
        let mut last: Option<(u32, u32)> = None;
        for &(r, c, v) in &sorted {
            if r as usize >= rows || c as usize >= cols {
                return Err(RecsError::Invalid(format!(
                    "entry ({r}, {c}) outside a {rows} x {cols} matrix"
                )));
            }
            if last == Some((r, c)) {
                if let Some(x) = values.last_mut() {
                    *x = match dup {
                        Duplicates::Sum => *x + v,
                        Duplicates::Max => x.max(v),
                    };
                }
                continue;
            }
            last = Some((r, c));
            indices.push(c);
            values.push(v);
            indptr[r as usize + 1] += 1;
        }
        for r in 0..rows {
            indptr[r + 1] += indptr[r];
        }
        Ok(Self {
            indptr,
            indices,
            values,
            cols,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Number of stored values.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Columns and values of row `r`.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r] as usize, self.indptr[r + 1] as usize);
        (&self.indices[a..b], &self.values[a..b])
    }

    /// Stored values in row `r`.
    pub fn row_len(&self, r: usize) -> usize {
        (self.indptr[r + 1] - self.indptr[r]) as usize
    }

    /// True when `(r, c)` is stored (binary search).
    pub fn contains(&self, r: usize, c: u32) -> bool {
        self.row(r).0.binary_search(&c).is_ok()
    }

    /// Scales every row to sum to 1 (rows summing to 0 stay as they are), as LightFM's
    /// `Dataset` does with `normalize_*_features`.
    pub fn normalize_rows(&mut self) {
        for r in 0..self.rows() {
            let (a, b) = (self.indptr[r] as usize, self.indptr[r + 1] as usize);
            let sum: f32 = self.values[a..b].iter().sum();
            if sum != 0.0 {
                for v in &mut self.values[a..b] {
                    *v /= sum;
                }
            }
        }
    }

    /// The transpose (a CSR of the columns).
    pub fn transpose(&self) -> Self {
        let mut indptr = vec![0u32; self.cols + 1];
        for &c in &self.indices {
            indptr[c as usize + 1] += 1;
        }
        for c in 0..self.cols {
            indptr[c + 1] += indptr[c];
        }
        let mut next: Vec<u32> = indptr[..self.cols].to_vec();
        let mut indices = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for r in 0..self.rows() {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let at = next[c as usize] as usize;
                indices[at] = r as u32;
                values[at] = v;
                next[c as usize] += 1;
            }
        }
        Self {
            indptr,
            indices,
            values,
            cols: self.rows(),
        }
    }

    /// Checks the invariants (lengths, bounds, sorted rows) of a matrix read from a file.
    pub fn validate(&self, what: &str) -> Result<(), RecsError> {
        let bad = |why: &str| Err(RecsError::Load(format!("{what}: {why}")));
        if self.indptr.first() != Some(&0) {
            return bad("indptr must start at 0");
        }
        if self.indices.len() != self.values.len() {
            return bad("indices and values differ in length");
        }
        if self.indptr.last().copied() != Some(self.indices.len() as u32) {
            return bad("indptr does not end at the number of values");
        }
        if self.indptr.windows(2).any(|w| w[0] > w[1]) {
            return bad("indptr decreases");
        }
        for r in 0..self.rows() {
            let cols = self.row(r).0;
            if cols.windows(2).any(|w| w[0] >= w[1]) {
                return bad("columns unsorted or repeated within a row");
            }
            if cols.last().is_some_and(|&c| c as usize >= self.cols) {
                return bad("column index out of range");
            }
        }
        Ok(())
    }
}

/// User-item interactions: a `users x items` matrix whose positive values are positives
/// (the value is the sample weight, 1 unless weights are asked for) and whose other stored values are known negatives (never sampled as negatives
/// by WARP/BPR, the negatives of the logistic loss), as LightFM reads its matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Interactions {
    /// The matrix (repeated pairs keep the largest value).
    pub matrix: Csr,
}

impl Interactions {
    /// Interactions from `(user, item, value)` triplets.
    pub fn new(
        users: usize,
        items: usize,
        triplets: &[(u32, u32, f32)],
    ) -> Result<Self, RecsError> {
        let matrix = Csr::from_triplets(users, items, triplets, Duplicates::Max)?;
        if matrix.values.iter().any(|v| !v.is_finite()) {
            return Err(RecsError::Invalid(
                "interaction values must be finite".into(),
            ));
        }
        Ok(Self { matrix })
    }

    /// Number of users (rows).
    pub fn users(&self) -> usize {
        self.matrix.rows()
    }

    /// Number of items (columns).
    pub fn items(&self) -> usize {
        self.matrix.cols
    }

    /// Number of positive entries.
    pub fn positives(&self) -> usize {
        self.matrix.values.iter().filter(|&&v| v > 0.0).count()
    }

    /// The matrix restricted to positive entries, values set to 1 (what evaluation ranks
    /// and serving calls "seen").
    pub fn positive_matrix(&self) -> Csr {
        let mut triplets = Vec::with_capacity(self.matrix.nnz());
        for u in 0..self.users() {
            let (items, vals) = self.matrix.row(u);
            for (&i, &v) in items.iter().zip(vals) {
                if v > 0.0 {
                    triplets.push((u as u32, i, 1.0));
                }
            }
        }
        // In range and sorted by construction.
        Csr::from_triplets(self.users(), self.items(), &triplets, Duplicates::Max)
            .unwrap_or_default()
    }

    /// Positive interactions per item (the popularity fallback).
    pub fn item_popularity(&self) -> Vec<f32> {
        let mut pop = vec![0f32; self.items()];
        for (&i, &v) in self.matrix.indices.iter().zip(&self.matrix.values) {
            if v > 0.0 {
                pop[i as usize] += 1.0;
            }
        }
        pop
    }
}

/// A feature matrix (entities x features) and the feature names. With identity features
/// (LightFM's default) entity `e` owns feature `e`, and side features follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// `entities x features`, rows summing to 1 when normalised.
    pub matrix: Csr,
    /// Whether the first `entities` features are the identity features.
    pub identity: bool,
    /// Names of the side features (feature `offset + j` is `side[j]`).
    pub side: IdMap,
}

impl Features {
    /// Identity features only.
    pub fn identity(n: usize) -> Self {
        Self {
            matrix: Csr::identity(n),
            identity: true,
            side: IdMap::new(),
        }
    }

    /// Identity features (when `identity`) plus side features `(entity, feature name,
    /// weight)`, each row normalised to sum 1 when `normalize` (LightFM `Dataset`'s
    /// defaults are identity and normalisation).
    pub fn build(
        entities: usize,
        identity: bool,
        side_features: &[(u32, String, f32)],
        normalize: bool,
    ) -> Result<Self, RecsError> {
        let mut side = IdMap::new();
        let offset = if identity { entities as u32 } else { 0 };
        let mut triplets: Vec<(u32, u32, f32)> = Vec::with_capacity(entities + side_features.len());
        if identity {
            triplets.extend((0..entities as u32).map(|e| (e, e, 1.0)));
        }
        for (e, name, w) in side_features {
            if !w.is_finite() {
                return Err(RecsError::Invalid(format!(
                    "feature '{name}' has a non-finite weight"
                )));
            }
            let f = side.insert(name);
            triplets.push((*e, offset + f, *w));
        }
        let cols = offset as usize + side.len();
        let mut matrix = Csr::from_triplets(entities, cols, &triplets, Duplicates::Sum)?;
        if normalize {
            matrix.normalize_rows();
        }
        Ok(Self {
            matrix,
            identity,
            side,
        })
    }

    /// Number of features (columns).
    pub fn len(&self) -> usize {
        self.matrix.cols
    }

    /// True when there are no features.
    pub fn is_empty(&self) -> bool {
        self.matrix.cols == 0
    }

    /// Index of the first side feature.
    pub fn side_offset(&self) -> usize {
        self.matrix.cols - self.side.len()
    }

    /// The feature index of side feature `name`.
    pub fn side_index(&self, name: &str) -> Option<u32> {
        self.side.get(name).map(|j| self.side_offset() as u32 + j)
    }

    /// Row `e` without its identity feature, renormalised to sum 1: the representation of
    /// an entity whose identity embedding was never trained (cold start).
    pub fn side_row(&self, e: usize) -> Vec<(u32, f32)> {
        let offset = self.side_offset() as u32;
        let (cols, vals) = self.matrix.row(e);
        let row: Vec<(u32, f32)> = cols
            .iter()
            .zip(vals)
            .filter(|(c, _)| **c >= offset)
            .map(|(&c, &v)| (c, v))
            .collect();
        normalized(row)
    }
}

/// `row` scaled to sum 1 (unchanged when it sums to 0).
pub(crate) fn normalized(mut row: Vec<(u32, f32)>) -> Vec<(u32, f32)> {
    let sum: f32 = row.iter().map(|(_, v)| v).sum();
    if sum != 0.0 {
        for (_, v) in &mut row {
            *v /= sum;
        }
    }
    row
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn triplets_become_sorted_rows_with_merged_duplicates() {
        let m = Csr::from_triplets(
            3,
            4,
            &[(2, 1, 1.0), (0, 3, 2.0), (0, 1, 1.0), (0, 3, 5.0)],
            Duplicates::Max,
        )
        .unwrap();
        assert_eq!(m.indptr, vec![0, 2, 2, 3]);
        assert_eq!(m.indices, vec![1, 3, 1]);
        assert_eq!(m.values, vec![1.0, 5.0, 1.0]);
        assert!(m.contains(0, 3) && !m.contains(1, 3));
        m.validate("m").unwrap();
        let s = Csr::from_triplets(1, 2, &[(0, 1, 1.0), (0, 1, 2.0)], Duplicates::Sum).unwrap();
        assert_eq!(s.values, vec![3.0]);
        assert!(Csr::from_triplets(1, 2, &[(0, 2, 1.0)], Duplicates::Sum).is_err());
    }

    #[test]
    fn transpose_twice_is_the_identity() {
        let m = Csr::from_triplets(
            3,
            4,
            &[(2, 1, 1.0), (0, 3, 2.0), (0, 1, 1.5), (1, 0, 4.0)],
            Duplicates::Sum,
        )
        .unwrap();
        let t = m.transpose();
        assert_eq!(t.rows(), 4);
        assert_eq!(t.row(1), (&[0u32, 2][..], &[1.5f32, 1.0][..]));
        assert_eq!(t.transpose(), m);
    }

    #[test]
    fn features_are_identity_then_side_normalised() {
        let f = Features::build(
            2,
            true,
            &[(0, "genre:a".into(), 1.0), (0, "genre:b".into(), 1.0)],
            true,
        )
        .unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f.side_offset(), 2);
        assert_eq!(f.side_index("genre:b"), Some(3));
        let (cols, vals) = f.matrix.row(0);
        assert_eq!(cols, &[0, 2, 3]);
        assert!(vals.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6));
        assert_eq!(f.matrix.row(1), (&[1u32][..], &[1.0f32][..]));
        assert_eq!(f.side_row(0), vec![(2, 0.5), (3, 0.5)]);
        assert!(f.side_row(1).is_empty());
    }

    #[test]
    fn interactions_split_positives_from_known_negatives() {
        let x = Interactions::new(2, 3, &[(0, 0, 1.0), (0, 2, -1.0), (1, 2, 3.0)]).unwrap();
        assert_eq!(x.positives(), 2);
        assert_eq!(x.item_popularity(), vec![1.0, 0.0, 1.0]);
        let p = x.positive_matrix();
        assert_eq!(p.indices, vec![0, 2]);
        assert!(Interactions::new(1, 1, &[(0, 0, f32::NAN)]).is_err());
    }

    #[test]
    fn corrupt_matrices_are_refused() {
        let mut m = Csr::identity(3);
        m.indices[1] = 7;
        assert!(m.validate("x").is_err());
        let mut m = Csr::identity(3);
        m.indptr[3] = 2;
        assert!(m.validate("x").is_err());
    }
}
