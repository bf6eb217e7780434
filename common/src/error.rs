//! The single error classification of infermesh, mapped once to HTTP and once to gRPC.

use std::fmt;

/// What went wrong, from the caller's point of view. Every service error carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or does not fit the model (HTTP 400, gRPC INVALID_ARGUMENT).
    InvalidInput,
    /// The model, version or route does not exist (HTTP 404, gRPC NOT_FOUND).
    NotFound,
    /// Admission refused the request: queue full or body too large (HTTP 429 / 413, gRPC
    /// RESOURCE_EXHAUSTED).
    Overloaded,
    /// The body is over the configured size limit (HTTP 413, gRPC RESOURCE_EXHAUSTED).
    TooLarge,
    /// The operation exists but this server is configured not to allow it (HTTP 403, gRPC
    /// PERMISSION_DENIED), e.g. the repository API without `--enable-model-control`.
    Forbidden,
    /// The target exists but is not ready, or a dependency is down (HTTP 503, gRPC UNAVAILABLE).
    Unavailable,
    /// A bug or an unexpected failure; details go to the log, never to the client (HTTP 500,
    /// gRPC INTERNAL).
    Internal,
}

impl ErrorKind {
    /// The HTTP status for this kind.
    pub fn http_status(self) -> http::StatusCode {
        match self {
            ErrorKind::InvalidInput => http::StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => http::StatusCode::NOT_FOUND,
            ErrorKind::Overloaded => http::StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::TooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Forbidden => http::StatusCode::FORBIDDEN,
            ErrorKind::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code for this kind.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::InvalidInput => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Overloaded | ErrorKind::TooLarge => tonic::Code::ResourceExhausted,
            ErrorKind::Forbidden => tonic::Code::PermissionDenied,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }

    /// A stable lower-case label, used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as a service reports it: a kind and a message safe to show to the caller.
///
/// Internal errors show a generic message to the client; the detail is logged where the error
/// is turned into a response.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    /// The classification.
    pub kind: ErrorKind,
    /// What the caller is told.
    pub message: String,
}

impl ServiceError {
    /// Builds an error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// An `InvalidInput` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    /// A `NotFound` error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// An `Unavailable` error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// An `Overloaded` error.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Overloaded, message)
    }
    /// An `Internal` error: `detail` is logged, the caller sees a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(ErrorKind::Internal, "internal error")
    }

    /// The gRPC status for this error.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.kind.grpc_code(), self.message.clone())
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        e.to_status()
    }
}

impl axum::response::IntoResponse for ServiceError {
    /// `{"error": "..."}` with the kind's status, as the KServe V2 REST spec says.
    fn into_response(self) -> axum::response::Response {
        let body = format!("{{\"error\":{}}}", serde_json_escape(&self.message));
        (
            self.kind.http_status(),
            [(http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

/// JSON string escaping without pulling serde_json into this crate.
fn serde_json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Rewrites tonic's own status codes for bad bodies into the ones the V2 spec and our
/// `ErrorKind` promise: an oversized message is RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE)
/// and an undecodable protobuf is INVALID_ARGUMENT (tonic says INTERNAL).
pub fn fix_decode_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let headers = resp.headers();
    let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()) else {
        return resp;
    };
    let msg = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let new_code = match code {
        "11" if msg.contains("message%20length%20too%20large")
            || msg.contains("message length too large") =>
        {
            Some("8")
        }
        "13" if msg.contains("decode") => Some("3"),
        _ => None,
    };
    if let Some(c) = new_code {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static(c));
    }
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_http_and_grpc() {
        assert_eq!(ErrorKind::InvalidInput.http_status(), 400);
        assert_eq!(ErrorKind::NotFound.http_status(), 404);
        assert_eq!(ErrorKind::Overloaded.http_status(), 429);
        assert_eq!(ErrorKind::TooLarge.http_status(), 413);
        assert_eq!(ErrorKind::Unavailable.http_status(), 503);
        assert_eq!(
            ErrorKind::InvalidInput.grpc_code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(ErrorKind::NotFound.grpc_code(), tonic::Code::NotFound);
        assert_eq!(
            ErrorKind::Overloaded.grpc_code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            ErrorKind::TooLarge.grpc_code(),
            tonic::Code::ResourceExhausted
        );
    }

    #[test]
    fn json_escaping_keeps_the_body_valid() {
        assert_eq!(
            serde_json_escape("a\"b\\c\nd\u{1}"),
            "\"a\\\"b\\\\c\\nd\\u0001\""
        );
    }

    #[test]
    fn decode_statuses_are_rewritten() {
        let resp = http::Response::builder()
            .header("grpc-status", "13")
            .header("grpc-message", "failed to decode Protobuf message")
            .body(())
            .unwrap();
        assert_eq!(fix_decode_status(resp).headers()["grpc-status"], "3");
        let resp = http::Response::builder()
            .header("grpc-status", "11")
            .header(
                "grpc-message",
                "Error, decoded message length too large: found 10 bytes",
            )
            .body(())
            .unwrap();
        assert_eq!(fix_decode_status(resp).headers()["grpc-status"], "8");
        let resp = http::Response::builder()
            .header("grpc-status", "13")
            .header("grpc-message", "internal error")
            .body(())
            .unwrap();
        assert_eq!(fix_decode_status(resp).headers()["grpc-status"], "13");
    }
}
