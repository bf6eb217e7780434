//! The gateway config file (`--config FILE`, TOML): which recommender model answers, how long
//! recommendations are cached, and the A/B experiment on the recommendations route.
//!
//! The file is read into plain serde structs (`*File`, unknown keys refused), then checked
//! into [`Settings`] at start-up, so a bad experiment (no arms, a zero weight, two arms with
//! one name) stops the gateway before any port opens instead of skewing live traffic.
//!
//! ```toml
//! [recommendations]
//! model = "recs"            # used when no experiment is configured
//! cache_ttl_seconds = 300
//! [[experiments]]
//! name = "recs-v2"
//! salt = "2026-11"          # default: the name
//! [[experiments.arms]]
//! name = "control"
//! model = "recs"
//! version = ""              # "" = latest
//! weight = 90
//! [[experiments.arms]]
//! name = "treatment"
//! model = "recs-next"
//! weight = 10
//! [experiments.shadow]
//! model = "recs-next"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Model of the recommendations route when the file names none.
pub const DEFAULT_RECS_MODEL: &str = "recs";
/// Default lifetime of a cached recommendation list.
pub const DEFAULT_CACHE_TTL_SECONDS: u64 = 300;
/// Default lifetime of a user's recent-views list (7 days).
pub const DEFAULT_RECENT_TTL_SECONDS: u64 = 7 * 24 * 3600;
/// Default number of users the in-memory cache and recent-views list hold.
pub const DEFAULT_MEMORY_USERS: usize = 10_000;
/// Longest experiment, arm, model or version name.
pub const MAX_NAME_LEN: usize = 64;

/// Errors reading or checking the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the gateway config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("gateway config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The file parses but describes something the gateway cannot run.
    #[error("gateway config: {0}")]
    Invalid(String),
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// `[recommendations]`.
    #[serde(default)]
    pub recommendations: RecommendationsFile,
    /// `[[experiments]]` (at most one: the recommendations route runs one experiment).
    #[serde(default)]
    pub experiments: Vec<ExperimentFile>,
}

/// `[recommendations]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendationsFile {
    /// Model used when no experiment is configured.
    #[serde(default = "default_model")]
    pub model: String,
    /// Its version ("" = the latest ready one).
    #[serde(default)]
    pub version: String,
    /// How long a cached list is served.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_seconds: u64,
    /// How long a user's recent views are kept after their last view.
    #[serde(default = "default_recent_ttl")]
    pub recent_ttl_seconds: u64,
    /// Users the in-memory cache and recent-views list hold (without Redis).
    #[serde(default = "default_memory_users")]
    pub memory_max_users: usize,
}

impl Default for RecommendationsFile {
    fn default() -> Self {
        Self {
            model: default_model(),
            version: String::new(),
            cache_ttl_seconds: DEFAULT_CACHE_TTL_SECONDS,
            recent_ttl_seconds: DEFAULT_RECENT_TTL_SECONDS,
            memory_max_users: DEFAULT_MEMORY_USERS,
        }
    }
}

fn default_model() -> String {
    DEFAULT_RECS_MODEL.into()
}
fn default_cache_ttl() -> u64 {
    DEFAULT_CACHE_TTL_SECONDS
}
fn default_recent_ttl() -> u64 {
    DEFAULT_RECENT_TTL_SECONDS
}
fn default_memory_users() -> usize {
    DEFAULT_MEMORY_USERS
}

/// `[[experiments]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// Name, also the Prometheus label and the Redis key of its counts.
    pub name: String,
    /// Salt of the assignment hash (default: the name). A new salt reshuffles users.
    #[serde(default)]
    pub salt: Option<String>,
    /// The arms; the first is the control the report compares the others with.
    #[serde(default)]
    pub arms: Vec<ArmFile>,
    /// A model called beside the served arm, never shown to users.
    #[serde(default)]
    pub shadow: Option<ModelFile>,
}

/// `[[experiments.arms]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmFile {
    /// Arm name.
    pub name: String,
    /// Model serving it.
    pub model: String,
    /// Version ("" = latest).
    #[serde(default)]
    pub version: String,
    /// Share of users, relative to the other arms' weights (default: 90/10 for two arms,
    /// equal shares otherwise; all arms give one or none does).
    #[serde(default)]
    pub weight: Option<u32>,
}

/// A model and version (`[experiments.shadow]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Model name.
    pub model: String,
    /// Version ("" = latest).
    #[serde(default)]
    pub version: String,
}

/// A model and a version; an empty version is the latest ready one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// Model name.
    pub model: String,
    /// Version, "" for the latest.
    pub version: String,
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arm {
    /// Name (unique within the experiment).
    pub name: String,
    /// What serves it.
    pub target: ModelRef,
    /// Share of users (> 0).
    pub weight: u32,
}

/// A checked experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Experiment {
    /// Name.
    pub name: String,
    /// Assignment salt.
    pub salt: String,
    /// At least one arm; the first is the control.
    pub arms: Vec<Arm>,
    /// Shadow model, if any.
    pub shadow: Option<ModelRef>,
}

/// Checked settings of the recommendations route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecsSettings {
    /// Model when no experiment runs.
    pub default_target: ModelRef,
    /// Cached lists older than this are misses.
    pub cache_ttl: Duration,
    /// Recent views expire this long after the last one.
    pub recent_ttl: Duration,
    /// Users held by the in-memory store.
    pub memory_max_users: usize,
}

/// The checked config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The recommendations route.
    pub recs: RecsSettings,
    /// Its experiment, if one is configured.
    pub experiment: Option<Experiment>,
}

impl Default for Settings {
    /// No experiment; model "recs", latest version; the default TTLs.
    fn default() -> Self {
        Self {
            recs: RecsSettings {
                default_target: ModelRef {
                    model: DEFAULT_RECS_MODEL.into(),
                    version: String::new(),
                },
                cache_ttl: Duration::from_secs(DEFAULT_CACHE_TTL_SECONDS),
                recent_ttl: Duration::from_secs(DEFAULT_RECENT_TTL_SECONDS),
                memory_max_users: DEFAULT_MEMORY_USERS,
            },
            experiment: None,
        }
    }
}

impl Settings {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let file: GatewayFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            source: Box::new(e),
        })?;
        file.check()
    }
}

/// Names end up in Redis keys, hash fields joined by ':' and Prometheus labels: keep them
/// plain.
fn check_name(what: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ConfigError::Invalid(format!(
            "{what} must be 1 to {MAX_NAME_LEN} characters, got '{name}'"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigError::Invalid(format!(
            "{what} '{name}' may hold only ASCII letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

fn check_target(what: &str, model: &str, version: &str) -> Result<ModelRef, ConfigError> {
    check_name(&format!("{what} model"), model)?;
    if !version.is_empty() {
        check_name(&format!("{what} version"), version)?;
    }
    Ok(ModelRef {
        model: model.to_string(),
        version: version.to_string(),
    })
}

impl GatewayFile {
    /// Checks the file into settings.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let r = self.recommendations;
        let default_target = check_target("[recommendations]", &r.model, &r.version)?;
        if r.cache_ttl_seconds == 0 {
            return Err(ConfigError::Invalid(
                "[recommendations] cache_ttl_seconds must be positive".into(),
            ));
        }
        if r.recent_ttl_seconds == 0 {
            return Err(ConfigError::Invalid(
                "[recommendations] recent_ttl_seconds must be positive".into(),
            ));
        }
        if r.memory_max_users == 0 {
            return Err(ConfigError::Invalid(
                "[recommendations] memory_max_users must be positive".into(),
            ));
        }
        if self.experiments.len() > 1 {
            return Err(ConfigError::Invalid(format!(
                "one experiment runs on the recommendations route, the file has {}",
                self.experiments.len()
            )));
        }
        let experiment = self
            .experiments
            .into_iter()
            .next()
            .map(ExperimentFile::check)
            .transpose()?;
        Ok(Settings {
            recs: RecsSettings {
                default_target,
                cache_ttl: Duration::from_secs(r.cache_ttl_seconds),
                recent_ttl: Duration::from_secs(r.recent_ttl_seconds),
                memory_max_users: r.memory_max_users,
            },
            experiment,
        })
    }
}

impl ExperimentFile {
    fn check(self) -> Result<Experiment, ConfigError> {
        check_name("experiment name", &self.name)?;
        let ctx = format!("experiment '{}'", self.name);
        if self.arms.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{ctx} needs at least one [[experiments.arms]]"
            )));
        }
        let given = self.arms.iter().filter(|a| a.weight.is_some()).count();
        if given != 0 && given != self.arms.len() {
            return Err(ConfigError::Invalid(format!(
                "{ctx}: give every arm a weight, or none (90/10 for two arms, equal otherwise)"
            )));
        }
        let defaults: Vec<u32> = match self.arms.len() {
            2 => vec![90, 10],
            n => vec![1; n],
        };
        let mut arms: Vec<Arm> = Vec::with_capacity(self.arms.len());
        for (a, default_weight) in self.arms.into_iter().zip(defaults) {
            check_name(&format!("{ctx} arm name"), &a.name)?;
            if arms.iter().any(|b| b.name == a.name) {
                return Err(ConfigError::Invalid(format!(
                    "{ctx}: arm name '{}' is used twice",
                    a.name
                )));
            }
            let weight = a.weight.unwrap_or(default_weight);
            if weight == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{ctx}: arm '{}' has weight 0 (weights must be positive)",
                    a.name
                )));
            }
            let target = check_target(&format!("{ctx} arm '{}'", a.name), &a.model, &a.version)?;
            arms.push(Arm {
                name: a.name,
                target,
                weight,
            });
        }
        let shadow = self
            .shadow
            .map(|s| check_target(&format!("{ctx} shadow"), &s.model, &s.version))
            .transpose()?;
        let salt = self.salt.unwrap_or_else(|| self.name.clone());
        Ok(Experiment {
            name: self.name,
            salt,
            arms,
            shadow,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[recommendations]
model = "recs"
cache_ttl_seconds = 120
[[experiments]]
name = "recs-v2"
salt = "2026-11"
[[experiments.arms]]
name = "control"
model = "recs"
version = ""
weight = 90
[[experiments.arms]]
name = "treatment"
model = "recs-next"
weight = 10
[experiments.shadow]
model = "recs-next"
version = ""
"#;

    fn err(text: &str) -> String {
        Settings::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::default();
        assert_eq!(s.recs.default_target.model, "recs");
        assert_eq!(s.recs.default_target.version, "");
        assert_eq!(s.recs.cache_ttl, Duration::from_secs(300));
        assert_eq!(s.recs.recent_ttl, Duration::from_secs(7 * 24 * 3600));
        assert!(s.experiment.is_none());
        assert_eq!(Settings::parse("").unwrap(), s);
        assert_eq!(GatewayFile::default().check().unwrap(), s);
    }

    #[test]
    fn reads_the_documented_example() {
        let s = Settings::parse(EXAMPLE).unwrap();
        assert_eq!(s.recs.cache_ttl, Duration::from_secs(120));
        let e = s.experiment.unwrap();
        assert_eq!(e.name, "recs-v2");
        assert_eq!(e.salt, "2026-11");
        assert_eq!(
            e.arms.iter().map(|a| a.weight).collect::<Vec<_>>(),
            [90, 10]
        );
        assert_eq!(e.arms[1].target.model, "recs-next");
        assert_eq!(e.shadow.unwrap().model, "recs-next");
    }

    #[test]
    fn default_split_and_salt() {
        let two = r#"
[[experiments]]
name = "x"
[[experiments.arms]]
name = "a"
model = "m"
[[experiments.arms]]
name = "b"
model = "n"
"#;
        let e = Settings::parse(two).unwrap().experiment.unwrap();
        assert_eq!(e.arms[0].weight, 90);
        assert_eq!(e.arms[1].weight, 10);
        assert_eq!(e.salt, "x");
        let three = format!("{two}[[experiments.arms]]\nname = \"c\"\nmodel = \"o\"\n");
        let e = Settings::parse(&three).unwrap().experiment.unwrap();
        assert!(e.arms.iter().all(|a| a.weight == 1));
    }

    #[test]
    fn refuses_bad_experiments_with_clear_errors() {
        let no_arms = "[[experiments]]\nname = \"x\"\n";
        assert!(err(no_arms).contains("at least one"), "{}", err(no_arms));
        let zero = EXAMPLE.replace("weight = 10", "weight = 0");
        assert!(err(&zero).contains("weight 0"), "{}", err(&zero));
        let dup = EXAMPLE.replace("name = \"treatment\"", "name = \"control\"");
        assert!(err(&dup).contains("used twice"), "{}", err(&dup));
        let mixed = EXAMPLE.replace("weight = 10", "");
        assert!(
            err(&mixed).contains("every arm a weight"),
            "{}",
            err(&mixed)
        );
        let two = format!("{EXAMPLE}\n[[experiments]]\nname = \"y\"\n");
        assert!(err(&two).contains("one experiment"), "{}", err(&two));
        let bad_name = EXAMPLE.replace("name = \"recs-v2\"", "name = \"a:b\"");
        assert!(err(&bad_name).contains("ASCII"), "{}", err(&bad_name));
        let unknown = EXAMPLE.replace("salt =", "pepper =");
        assert!(err(&unknown).contains("pepper"), "{}", err(&unknown));
        let negative = EXAMPLE.replace("weight = 10", "weight = -1");
        assert!(Settings::parse(&negative).is_err());
        assert!(err("[recommendations]\ncache_ttl_seconds = 0\n").contains("cache_ttl_seconds"));
        assert!(err("[recommendations]\nmodel = \"\"\n").contains("model"));
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.toml");
        std::fs::write(&p, "[recommendations\n").unwrap();
        assert!(
            Settings::load(&p)
                .unwrap_err()
                .to_string()
                .contains("gw.toml")
        );
        assert!(
            Settings::load(&dir.path().join("missing.toml"))
                .unwrap_err()
                .to_string()
                .contains("missing.toml")
        );
        std::fs::write(&p, EXAMPLE).unwrap();
        assert!(Settings::load(&p).unwrap().experiment.is_some());
    }
}
