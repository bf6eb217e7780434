//! LightGBM training, one boosting round at a time, over LightGBM's C API (`lightgbm3-sys`,
//! the bindings under the `lightgbm3` crate).
//!
//! Written by hand because `lightgbm3::Booster::train_with_valid` runs the whole loop inside
//! one call: it reports nothing per round (no progress bar, no per-iteration metrics for
//! MLflow) and cannot be stopped from outside (no pruning of tuning trials), and its early
//! stopping reads only the first metric. This module owns the datasets and the booster
//! handles (freed on drop), checks every return code (`LGBM_GetLastError` becomes the error),
//! and gives back the model as LightGBM's text format, which the tree engine serves.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use lightgbm3_sys as sys;

/// A LightGBM failure, with LightGBM's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LightGBM: {0}")]
pub struct LgbmError(pub String);

fn check(rc: c_int) -> Result<(), LgbmError> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: LGBM_GetLastError returns a pointer to a NUL-terminated, thread-local message
    // that stays valid until the next LightGBM call on this thread; it is copied at once.
    let msg = unsafe { CStr::from_ptr(sys::LGBM_GetLastError()) }
        .to_string_lossy()
        .into_owned();
    Err(LgbmError(msg))
}

fn cstring(s: &str) -> Result<CString, LgbmError> {
    CString::new(s).map_err(|_| LgbmError(format!("'{s}' contains a NUL byte")))
}

/// A dataset: a row-major `f64` matrix (NaN = missing) and its 0/1 labels.
#[derive(Debug)]
pub struct Dataset {
    handle: sys::DatasetHandle,
    rows: usize,
}

impl Dataset {
    /// Builds a dataset from `rows x cols` values; `params` are LightGBM dataset parameters
    /// (`max_bin=255 categorical_feature=0,3`); `reference` makes a validation set share the
    /// training set's bins.
    pub fn new(
        values: &[f64],
        cols: usize,
        labels: &[f32],
        names: &[String],
        params: &str,
        reference: Option<&Dataset>,
    ) -> Result<Self, LgbmError> {
        let rows = labels.len();
        if cols == 0 || values.len() != rows * cols || names.len() != cols || rows == 0 {
            return Err(LgbmError(format!(
                "{} values for {rows} rows x {cols} columns ({} names)",
                values.len(),
                names.len()
            )));
        }
        let (nrow, ncol) = (
            i32::try_from(rows).map_err(|_| LgbmError("too many rows".into()))?,
            i32::try_from(cols).map_err(|_| LgbmError("too many columns".into()))?,
        );
        let params = cstring(params)?;
        let mut handle: sys::DatasetHandle = std::ptr::null_mut();
        // SAFETY: `values` holds exactly nrow * ncol f64 in row-major order (checked above);
        // LightGBM copies what it needs into its own bins before returning. `reference` is a
        // live handle owned by another Dataset or null.
        check(unsafe {
            sys::LGBM_DatasetCreateFromMat(
                values.as_ptr() as *const c_void,
                sys::C_API_DTYPE_FLOAT64 as c_int,
                nrow,
                ncol,
                1,
                params.as_ptr(),
                reference.map_or(std::ptr::null_mut(), |r| r.handle),
                &mut handle,
            )
        })?;
        let ds = Dataset { handle, rows };
        let field = cstring("label")?;
        // SAFETY: `labels` holds nrow f32 values, the type and count LightGBM is told.
        check(unsafe {
            sys::LGBM_DatasetSetField(
                ds.handle,
                field.as_ptr(),
                labels.as_ptr() as *const c_void,
                nrow,
                sys::C_API_DTYPE_FLOAT32 as c_int,
            )
        })?;
        let cnames = names
            .iter()
            .map(|n| cstring(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<*const c_char> = cnames.iter().map(|c| c.as_ptr()).collect();
        // SAFETY: `ptrs` holds ncol pointers to NUL-terminated names that outlive the call.
        check(unsafe { sys::LGBM_DatasetSetFeatureNames(ds.handle, ptrs.as_mut_ptr(), ncol) })?;
        Ok(ds)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        // SAFETY: the handle came from LGBM_DatasetCreateFromMat and is freed once, here.
        // A Booster that used it is dropped first (it borrows the Dataset).
        unsafe {
            sys::LGBM_DatasetFree(self.handle);
        }
    }
}

/// A booster being trained on a training set and evaluated on validation sets.
#[derive(Debug)]
pub struct Booster<'a> {
    handle: sys::BoosterHandle,
    _data: std::marker::PhantomData<&'a Dataset>,
    evals: usize,
}

impl<'a> Booster<'a> {
    /// A booster with LightGBM parameters `params` (`objective=binary metric=average_precision
    /// learning_rate=0.05 ...`), evaluating on each of `valid` in order.
    pub fn new(train: &'a Dataset, valid: &[&'a Dataset], params: &str) -> Result<Self, LgbmError> {
        let params = cstring(params)?;
        let mut handle: sys::BoosterHandle = std::ptr::null_mut();
        // SAFETY: `train` is a live dataset that outlives the booster ('a).
        check(unsafe { sys::LGBM_BoosterCreate(train.handle, params.as_ptr(), &mut handle) })?;
        let mut b = Booster {
            handle,
            _data: std::marker::PhantomData,
            evals: 0,
        };
        for v in valid {
            // SAFETY: both handles are live; the validation set outlives the booster ('a).
            check(unsafe { sys::LGBM_BoosterAddValidData(b.handle, v.handle) })?;
        }
        let mut n: c_int = 0;
        // SAFETY: writes one int.
        check(unsafe { sys::LGBM_BoosterGetEvalCounts(b.handle, &mut n) })?;
        b.evals = n.max(0) as usize;
        Ok(b)
    }

    /// One boosting round; `true` when LightGBM cannot split any further.
    pub fn update(&mut self) -> Result<bool, LgbmError> {
        let mut finished: c_int = 0;
        // SAFETY: live handle; writes one int.
        check(unsafe { sys::LGBM_BoosterUpdateOneIter(self.handle, &mut finished) })?;
        Ok(finished != 0)
    }

    /// The metrics on data set `index` (0: training, 1..: the validation sets), in the order
    /// of the `metric` parameter.
    pub fn eval(&self, index: usize) -> Result<Vec<f64>, LgbmError> {
        let mut out = vec![0.0f64; self.evals];
        let mut len: c_int = 0;
        // SAFETY: `out` has room for every metric (LGBM_BoosterGetEvalCounts).
        check(unsafe {
            sys::LGBM_BoosterGetEval(self.handle, index as c_int, &mut len, out.as_mut_ptr())
        })?;
        out.truncate(len.max(0) as usize);
        Ok(out)
    }

    /// Rounds trained so far.
    pub fn iterations(&self) -> Result<usize, LgbmError> {
        let mut it: c_int = 0;
        // SAFETY: live handle; writes one int.
        check(unsafe { sys::LGBM_BoosterGetCurrentIteration(self.handle, &mut it) })?;
        Ok(it.max(0) as usize)
    }

    /// Drops the last round.
    pub fn rollback(&mut self) -> Result<(), LgbmError> {
        // SAFETY: live handle.
        check(unsafe { sys::LGBM_BoosterRollbackOneIter(self.handle) })
    }

    /// The model in LightGBM's text format (every round kept).
    pub fn model_text(&self) -> Result<String, LgbmError> {
        let mut len: i64 = 0;
        // SAFETY: a zero-length buffer only asks for the size.
        check(unsafe {
            sys::LGBM_BoosterSaveModelToString(
                self.handle,
                0,
                -1,
                sys::C_API_FEATURE_IMPORTANCE_SPLIT as c_int,
                0,
                &mut len,
                std::ptr::null_mut(),
            )
        })?;
        let mut buf = vec![0u8; len.max(1) as usize];
        let cap = buf.len() as i64;
        // SAFETY: `buf` holds `cap` bytes; LightGBM writes at most that, NUL included.
        check(unsafe {
            sys::LGBM_BoosterSaveModelToString(
                self.handle,
                0,
                -1,
                sys::C_API_FEATURE_IMPORTANCE_SPLIT as c_int,
                cap,
                &mut len,
                buf.as_mut_ptr() as *mut c_char,
            )
        })?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        buf.truncate(end);
        String::from_utf8(buf).map_err(|_| LgbmError("model text is not UTF-8".into()))
    }
}

impl Drop for Booster<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from LGBM_BoosterCreate and is freed once, here.
        unsafe {
            sys::LGBM_BoosterFree(self.handle);
        }
    }
}
