//! The bounds on request texts that every family embedding or classifying them in its own
//! versions shares (topics, sentiment): the `max_text_bytes` key and the per-request check.

use infermesh_common::ServiceError;
use infermesh_registry::check_max;

/// Default `max_text_bytes`: 16 KiB per text (MiniLM reads at most 512 tokens, a few KiB of
/// English; the rest would be tokenised only to be cut).
pub const DEFAULT_MAX_TEXT_BYTES: usize = 16 << 10;

/// Largest `max_text_bytes`: 16 MiB.
pub const MAX_TEXT_BYTES_LIMIT: usize = 16 << 20;

/// Removes `max_text_bytes` from a family's `parameters` and returns it (default
/// [`DEFAULT_MAX_TEXT_BYTES`], at most [`MAX_TEXT_BYTES_LIMIT`]).
pub fn take_max_text_bytes(parameters: &mut toml::Table) -> Result<usize, String> {
    let max_text_bytes = match parameters.remove("max_text_bytes") {
        None => DEFAULT_MAX_TEXT_BYTES,
        Some(toml::Value::Integer(n)) if n > 0 => usize::try_from(n)
            .map_err(|_| format!("max_text_bytes = {n} does not fit this platform"))?,
        Some(other) => {
            return Err(format!(
                "max_text_bytes must be a positive integer, not {other}"
            ));
        }
    };
    check_max("max_text_bytes", max_text_bytes, MAX_TEXT_BYTES_LIMIT)?;
    Ok(max_text_bytes)
}

/// Refuses more than `max_texts` texts, or a text longer than `max_bytes` bytes, naming the
/// limit and the config key that sets it.
pub fn check_texts(
    texts: &[String],
    max_texts: usize,
    max_bytes: usize,
) -> Result<(), ServiceError> {
    if texts.len() > max_texts {
        return Err(ServiceError::invalid(format!(
            "{} texts in one request; this model takes at most {max_texts} (max_client_batch_size)",
            texts.len()
        )));
    }
    if let Some((i, t)) = texts.iter().enumerate().find(|(_, t)| t.len() > max_bytes) {
        return Err(ServiceError::invalid(format!(
            "text {i} is {} bytes; this model takes at most {max_bytes} bytes per text (max_text_bytes)",
            t.len()
        )));
    }
    Ok(())
}
