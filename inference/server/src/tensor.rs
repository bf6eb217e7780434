//! V2 tensors (defined in the serving core, shared with the model families).

pub use infermesh_inference::tensor::*;
