//! A dense, row-major `f32` matrix: the embeddings this crate takes and returns.

use crate::TopicError;

/// A dense row-major matrix of `f32` (one row per document or point).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// A `rows x cols` matrix over `data` (row-major); refused when the lengths disagree.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, TopicError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(TopicError::InvalidInput(format!(
                "{} values is not {rows} rows of {cols} columns",
                data.len()
            )));
        }
        Ok(Self { rows, cols, data })
    }

    /// A matrix from equal-length rows.
    pub fn from_rows(rows: &[Vec<f32>]) -> Result<Self, TopicError> {
        let cols = rows.first().map_or(0, Vec::len);
        if let Some(i) = rows.iter().position(|r| r.len() != cols) {
            return Err(TopicError::InvalidInput(format!(
                "row {i} has {} values, row 0 has {cols}",
                rows[i].len()
            )));
        }
        Ok(Self {
            rows: rows.len(),
            cols,
            data: rows.concat(),
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i` (panics when `i >= rows`, as slice indexing does).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The values, row-major, by value.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Refuses NaN and infinities (the first one found is named).
    pub(crate) fn check_finite(&self, what: &str) -> Result<(), TopicError> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(at) => Err(TopicError::InvalidInput(format!(
                "{what}: row {} column {} is {}; only finite numbers are taken",
                at / self.cols.max(1),
                at % self.cols.max(1),
                self.data[at]
            ))),
        }
    }
}
