//! Model URIs as MLflow writes them: `models:/NAME@ALIAS` and `models:/NAME/VERSION`, and the
//! short `NAME@ALIAS` form flags accept.

use std::fmt;
use std::str::FromStr;

/// Which version of a registered model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// The version an alias points at (`models:/fraud@champion`).
    Alias(String),
    /// A fixed version (`models:/fraud/3`).
    Version(u64),
}

/// A registered model and one of its versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelUri {
    /// Registered model name.
    pub name: String,
    /// Alias or version.
    pub reference: ModelRef,
}

/// Why a model URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad model URI '{uri}': {why} (expected models:/NAME@ALIAS, models:/NAME/VERSION or NAME@ALIAS)"
)]
pub struct BadModelUri {
    uri: String,
    why: &'static str,
}

/// Whether `s` is a valid registered-model name or alias: letters, digits, `_`, `-`, `.`,
/// not starting with a dot, at most 256 bytes (what MLflow and a file name both accept).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Query parameters whose names contain one of these (case-insensitive) carry secrets:
/// bearer tokens, presigned-URL signatures, passwords, API keys.
pub const SECRET_QUERY_KEYS: [&str; 8] = [
    "token",
    "password",
    "passwd",
    "secret",
    "sig",
    "key",
    "auth",
    "credential",
];

/// A URI fit for logs, error messages and files on disk: the userinfo (`user:pass@`) and every
/// query parameter whose name looks like a credential ([`SECRET_QUERY_KEYS`]: `token`,
/// `password`, `X-Amz-Signature`, `api_key`...) are removed; the rest is kept as written, so
/// a URI without credentials comes back unchanged (the sync hashes it to name its cache).
/// Text without a `scheme://` (a directory, `models:/fraud@champion`) is returned as it is.
/// A URI that has an `@` but does not parse (an unencoded `/` in a password) keeps only its
/// scheme: better nothing than part of a secret.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let scheme = &uri[..scheme_end];
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return uri.to_string();
    }
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    if tail.contains('@') && reqwest::Url::parse(uri).is_err() {
        return format!("{scheme}://<redacted>");
    }
    let (before_fragment, fragment) = tail.split_at(tail.find('#').unwrap_or(tail.len()));
    let (path, query) = match before_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (before_fragment, None),
    };
    let mut out = format!("{scheme}://{host}{path}");
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let key = pair
                    .split('=')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                !SECRET_QUERY_KEYS.iter().any(|s| key.contains(s))
            })
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out.push_str(fragment);
    out
}

impl FromStr for ModelUri {
    type Err = BadModelUri;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let bad = |why| BadModelUri {
            uri: uri.to_string(),
            why,
        };
        let rest = uri.strip_prefix("models:/").unwrap_or(uri);
        let (name, reference) = if let Some((name, alias)) = rest.split_once('@') {
            if !valid_name(alias) {
                return Err(bad("the alias must be letters, digits, '_', '-' or '.'"));
            }
            if alias.bytes().all(|b| b.is_ascii_digit()) || alias.eq_ignore_ascii_case("latest") {
                return Err(bad("an alias cannot be a number or 'latest'"));
            }
            (name, ModelRef::Alias(alias.to_string()))
        } else if let Some((name, version)) = rest.split_once('/') {
            let v: u64 = version
                .parse()
                .map_err(|_| bad("the version must be a positive integer"))?;
            if v == 0 {
                return Err(bad("versions start at 1"));
            }
            (name, ModelRef::Version(v))
        } else {
            return Err(bad("no alias or version"));
        };
        if !valid_name(name) {
            return Err(bad(
                "the model name must be letters, digits, '_', '-' or '.'",
            ));
        }
        Ok(ModelUri {
            name: name.to_string(),
            reference,
        })
    }
}

impl fmt::Display for ModelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            ModelRef::Alias(a) => write!(f, "models:/{}@{a}", self.name),
            ModelRef::Version(v) => write!(f, "models:/{}/{v}", self.name),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_forms() {
        let u: ModelUri = "models:/fraud@champion".parse().unwrap();
        assert_eq!(u.name, "fraud");
        assert_eq!(u.reference, ModelRef::Alias("champion".into()));
        assert_eq!(u.to_string(), "models:/fraud@champion");
        let short: ModelUri = "fraud@champion".parse().unwrap();
        assert_eq!(short, u);
        let v: ModelUri = "models:/fraud-v2.lgb/12".parse().unwrap();
        assert_eq!(v.reference, ModelRef::Version(12));
        assert_eq!(v.to_string(), "models:/fraud-v2.lgb/12");
    }

    #[test]
    fn refuses_what_mlflow_would_refuse() {
        for bad in [
            "models:/fraud",
            "fraud",
            "models:/@champion",
            "models:/fraud@",
            "models:/fraud@7",
            "models:/fraud@latest",
            "models:/fraud/0",
            "models:/fraud/x",
            "models:/../etc@a",
            "models:/a b@c",
            "models:/fraud@cham/pion",
        ] {
            let e = bad.parse::<ModelUri>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn redaction_strips_userinfo_and_secret_query_parameters() {
        for (raw, want) in [
            ("http://user:s3cret@host:5000", "http://host:5000"),
            ("https://user:s3cret@host:5000/", "https://host:5000/"),
            ("http://user@host/api?x=1", "http://host/api?x=1"),
            (
                "http://host:5000/p?token=s3cret&run=1&Api_Key=s3cret#f",
                "http://host:5000/p?run=1#f",
            ),
            (
                "https://b.s3.amazonaws.com/k?X-Amz-Signature=s3cret&X-Amz-Security-Token=s3cret",
                "https://b.s3.amazonaws.com/k",
            ),
            ("http://user:s3/cret@host:5000", "http://<redacted>"),
            ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
            ("mlflow-artifacts:/1/abc", "mlflow-artifacts:/1/abc"),
            ("/var/registry", "/var/registry"),
            ("models:/fraud@champion", "models:/fraud@champion"),
        ] {
            let got = redact_uri(raw);
            assert_eq!(got, want, "{raw}");
            assert!(!got.contains("s3cret"), "{raw}");
        }
    }
}
