//! `ReviewSubmitted`, the value of topic `reviews.submitted` (docs/ARCHITECTURE.md, "Events"),
//! and its validation: what the gateway checks before publishing and the processor checks
//! again on every delivery (a message may come from any producer).
//!
//! JSON, keyed by `review_id`:
//! `{"review_id": "...", "product_id": "...", "text": "...", "rating": 4, "ts": 1793872800000}`
//! (`rating` optional, 1..=5; `ts` Unix milliseconds).

use serde::{Deserialize, Serialize};

use crate::bus::Message;

/// The topic reviews are published to.
pub const TOPIC: &str = "reviews.submitted";
/// Longest review text, in bytes (UTF-8).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Longest review or product id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// The content type header of a published review.
pub const CONTENT_TYPE: &str = "application/json";

/// Why a review is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The bytes are not UTF-8.
    #[error("the review is not valid UTF-8 (at byte {0})")]
    NotUtf8(usize),
    /// Not the JSON of a review (syntax, a missing or unknown field, a wrong type).
    #[error("invalid review JSON: {0}")]
    Malformed(String),
    /// `text` is empty or whitespace only.
    #[error("text must not be empty")]
    EmptyText,
    /// `text` is over [`MAX_TEXT_BYTES`].
    #[error("text is {bytes} bytes, at most {max} are accepted")]
    TextTooLong {
        /// Its length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// `rating` is outside 1..=5.
    #[error("rating {0} is outside 1..=5")]
    BadRating(i64),
    /// An id is empty, too long or holds control characters.
    #[error("{field} {reason}")]
    BadId {
        /// `review_id` or `product_id`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// `ts` is negative.
    #[error("ts must be Unix milliseconds >= 0, not {0}")]
    BadTimestamp(i64),
}

impl ReviewError {
    /// A short, bounded metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ReviewError::NotUtf8(_) => "not_utf8",
            ReviewError::Malformed(_) => "malformed",
            ReviewError::EmptyText => "empty_text",
            ReviewError::TextTooLong { .. } => "text_too_long",
            ReviewError::BadRating(_) => "bad_rating",
            ReviewError::BadId { .. } => "bad_id",
            ReviewError::BadTimestamp(_) => "bad_ts",
        }
    }

    /// Whether the input is refused for its size (HTTP 413) rather than its content (400).
    pub fn is_too_large(&self) -> bool {
        matches!(self, ReviewError::TextTooLong { .. })
    }
}

/// A review as `reviews.submitted` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSubmitted {
    /// The review's id: the message key, and what the pipeline is idempotent by.
    pub review_id: String,
    /// The product reviewed.
    pub product_id: String,
    /// The review's text (at most [`MAX_TEXT_BYTES`] bytes).
    pub text: String,
    /// Stars, 1..=5, when the reviewer gave any. Wider than needed so that an out-of-range
    /// number is a [`ReviewError::BadRating`], not a JSON type error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<i64>,
    /// When it was submitted, Unix milliseconds.
    pub ts: i64,
}

/// A new review id (a random UUID), for reviews submitted without one.
pub fn new_review_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn check_id(field: &'static str, value: &str) -> Result<(), ReviewError> {
    let reason = if value.is_empty() {
        "must not be empty".to_string()
    } else if value.len() > MAX_ID_BYTES {
        format!(
            "is {} bytes, at most {MAX_ID_BYTES} are accepted",
            value.len()
        )
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_string()
    } else {
        return Ok(());
    };
    Err(ReviewError::BadId { field, reason })
}

impl ReviewSubmitted {
    /// Checks ids, text and rating.
    pub fn validate(&self) -> Result<(), ReviewError> {
        check_id("review_id", &self.review_id)?;
        check_id("product_id", &self.product_id)?;
        if self.text.trim().is_empty() {
            return Err(ReviewError::EmptyText);
        }
        if self.text.len() > MAX_TEXT_BYTES {
            return Err(ReviewError::TextTooLong {
                bytes: self.text.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        if let Some(r) = self.rating
            && !(1..=5).contains(&r)
        {
            return Err(ReviewError::BadRating(r));
        }
        if self.ts < 0 {
            return Err(ReviewError::BadTimestamp(self.ts));
        }
        Ok(())
    }

    /// Parses and validates the JSON bytes of a review: non-UTF-8 input is
    /// [`ReviewError::NotUtf8`], never a lossy conversion.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReviewError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ReviewError::NotUtf8(e.valid_up_to()))?;
        let review: ReviewSubmitted =
            serde_json::from_str(text).map_err(|e| ReviewError::Malformed(e.to_string()))?;
        review.validate()?;
        Ok(review)
    }

    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The bus message: key `review_id`, JSON payload, a content-type header.
    pub fn to_message(&self) -> Message {
        let mut m = Message::new(self.review_id.clone(), self.to_json());
        m.headers
            .push(("content-type".to_string(), CONTENT_TYPE.to_string()));
        m
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn review() -> ReviewSubmitted {
        ReviewSubmitted {
            review_id: "r1".into(),
            product_id: "p1".into(),
            text: "Great battery, dim screen.".into(),
            rating: Some(4),
            ts: 1_793_872_800_000,
        }
    }

    #[test]
    fn a_review_round_trips_through_its_message() {
        let r = review();
        let m = r.to_message();
        assert_eq!(m.key.as_deref(), Some("r1"));
        assert_eq!(ReviewSubmitted::from_json(&m.payload).unwrap(), r);
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"review_id": "r1", "product_id": "p1",
                "text": "Great battery, dim screen.", "rating": 4, "ts": 1_793_872_800_000i64})
        );
        // No rating: the field is left out, and reads back as none.
        let r = ReviewSubmitted {
            rating: None,
            ..review()
        };
        let back = ReviewSubmitted::from_json(&r.to_json()).unwrap();
        assert_eq!(back.rating, None);
        assert!(!String::from_utf8(r.to_json()).unwrap().contains("rating"));
    }

    #[test]
    fn bad_reviews_get_typed_errors() {
        let cases: Vec<(ReviewSubmitted, &str)> = vec![
            (
                ReviewSubmitted {
                    text: " \n\t".into(),
                    ..review()
                },
                "empty_text",
            ),
            (
                ReviewSubmitted {
                    text: "x".repeat(MAX_TEXT_BYTES + 1),
                    ..review()
                },
                "text_too_long",
            ),
            (
                ReviewSubmitted {
                    rating: Some(0),
                    ..review()
                },
                "bad_rating",
            ),
            (
                ReviewSubmitted {
                    rating: Some(6),
                    ..review()
                },
                "bad_rating",
            ),
            (
                ReviewSubmitted {
                    review_id: String::new(),
                    ..review()
                },
                "bad_id",
            ),
            (
                ReviewSubmitted {
                    product_id: "a\u{0}b".into(),
                    ..review()
                },
                "bad_id",
            ),
            (ReviewSubmitted { ts: -1, ..review() }, "bad_ts"),
        ];
        for (r, label) in cases {
            let err = r.validate().unwrap_err();
            assert_eq!(err.label(), label, "{err}");
            // The same refusal from the bytes.
            assert_eq!(ReviewSubmitted::from_json(&r.to_json()).unwrap_err(), err);
        }
        // Exactly at the bound is fine (multi-byte characters count as bytes).
        let at_bound = ReviewSubmitted {
            text: "é".repeat(MAX_TEXT_BYTES / 2),
            ..review()
        };
        at_bound.validate().unwrap();
        assert!(
            ReviewSubmitted {
                text: format!("{}x", at_bound.text),
                ..review()
            }
            .validate()
            .unwrap_err()
            .is_too_large()
        );
    }

    #[test]
    fn bytes_that_are_not_a_review_are_refused() {
        let mut bytes = review().to_json();
        // Invalid UTF-8 inside the text.
        let at = bytes.iter().position(|&b| b == b'G').unwrap();
        bytes[at] = 0xff;
        assert_eq!(
            ReviewSubmitted::from_json(&bytes).unwrap_err(),
            ReviewError::NotUtf8(at)
        );
        for bad in [
            &b"{"[..],
            br#"{"review_id":"r","product_id":"p","ts":1}"#,
            br#"{"review_id":"r","product_id":"p","text":"t","ts":1,"extra":1}"#,
            br#"{"review_id":"r","product_id":"p","text":"t","ts":1,"rating":4.5}"#,
        ] {
            assert_eq!(
                ReviewSubmitted::from_json(bad).unwrap_err().label(),
                "malformed"
            );
        }
    }

    #[test]
    fn new_ids_are_unique() {
        assert_ne!(new_review_id(), new_review_id());
        check_id("review_id", &new_review_id()).unwrap();
    }
}
