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
}
