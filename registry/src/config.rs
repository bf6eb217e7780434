//! A model's serving configuration, from `config.toml` or a Triton `config.pbtxt`.
//!
//! The registry reads what every model has (platform, batching, admission, version policy,
//! tensor names, `[limits]`) and keeps the rest as the model family's own keys
//! ([`ModelConfig::parameters`]), which the family parses and checks when it loads a version:
//! the registry knows no family by name.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::RegistryError;
use crate::pbtxt::{self, Message};

/// Which versions of a model are served (Triton's version policy).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionPolicy {
    /// The highest `n` versions.
    Latest(usize),
    /// Every version on disk.
    All,
    /// Exactly these versions (those present on disk).
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// Picks the versions to serve from those on disk.
    pub fn select(&self, on_disk: &[u64]) -> Vec<u64> {
        let mut v: Vec<u64> = on_disk.to_vec();
        v.sort_unstable();
        v.dedup();
        match self {
            VersionPolicy::All => v,
            VersionPolicy::Latest(n) => v.iter().rev().take(*n).rev().copied().collect(),
            VersionPolicy::Specific(want) => v.into_iter().filter(|x| want.contains(x)).collect(),
        }
    }
}

/// Where a config came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// infermesh's `config.toml`.
    Toml,
    /// A Triton `config.pbtxt`.
    TritonPbtxt,
}

/// The serving configuration of one model, whichever file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Model name (the directory name).
    pub name: String,
    /// The platform, which picks the model family that serves it (`xgboost`, `lightgbm`,
    /// `bert-embedding`, ...; a `config.pbtxt`'s `backend`, such as `fil`).
    pub platform: String,
    /// Artifact file name inside a version folder, or `None` for the family's defaults.
    pub model_file: Option<String>,
    /// Where the config came from.
    pub source: ConfigSource,
    /// Largest batch (rows, or items) the batcher builds, and the most items a request may
    /// hold where the family counts items.
    pub max_batch_size: usize,
    /// How long the batcher may wait for more work before running a partial batch.
    pub max_queue_delay: Duration,
    /// Rows admitted (queued or running) at once; past it requests are refused.
    pub max_queue_rows: usize,
    /// Which versions to serve.
    pub version_policy: VersionPolicy,
    /// Name of the input tensor, or `None` for the family's default.
    pub input_name: Option<String>,
    /// Name of the (first) output tensor, or `None` for the family's default.
    pub output_name: Option<String>,
    /// The family's own keys: every `config.toml` key (and table) this struct does not
    /// hold, or a `config.pbtxt`'s `parameters` as strings. The family parses them, refusing
    /// keys it does not know.
    pub parameters: toml::Table,
    /// The `[limits]` section, as written: bounds on what loading this model's artifact may
    /// take (features, nodes, depth, vocabulary, bytes...). Each model family reads the keys
    /// it knows and refuses the others; an absent section means the family's defaults.
    pub limits: toml::Table,
    /// The `[monitoring]` section: what the server's inference log and live drift may keep of
    /// this model's requests.
    pub monitoring: Monitoring,
    /// The `[feature_store]` section: model inputs the server fills from the feature store
    /// when a request does not carry them.
    pub feature_store: FeatureStoreInputs,
}

/// A model's `[feature_store]` section: which of its inputs come from the feature store
/// (when the server has one and a request leaves them out), each a Feast `view:feature`
/// reference, read for the request's entities (`user_id`, `device_id`, ...).
///
/// ```toml
/// [feature_store]
/// features = { user_avg_spend = "user_spend:user_avg_spend", device_risk_score = "device_risk:device_risk_score" }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureStoreInputs {
    /// Model input name -> `view:feature`.
    pub features: std::collections::BTreeMap<String, String>,
}

/// A model's `[monitoring]` section: whether the server's inference log
/// (`--log-sample-rate`) and live drift (`--drift-interval`) watch it, and whether the log
/// may keep raw text inputs and request ids (off by default: those can carry personal data).
///
/// ```toml
/// [monitoring]
/// log = true          # sampled requests go to the inference log (when the server logs)
/// drift = true        # live drift against the version's drift_reference.parquet
/// log_raw = false     # also log BYTES inputs (raw text) and request ids
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    /// Sampled requests go to the inference log.
    pub log: bool,
    /// Live drift gauges against the version's reference profile.
    pub drift: bool,
    /// Raw text inputs and request ids are logged too.
    pub log_raw: bool,
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            log: true,
            drift: true,
            log_raw: false,
        }
    }
}

/// Default batch size in rows.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 1024;
/// Default admission capacity in rows.
pub const DEFAULT_MAX_QUEUE_ROWS: usize = 262_144;

// Upper bounds of the sizes a config sets. The serving core sizes semaphores, batches and
// buffers from these numbers (tokio's `Semaphore::new` panics past `usize::MAX >> 3`, a
// batch of `max_batch_size` rows is allocated whole), so a config file must not be able to
// ask for an absurd allocation or a panic: past a bound the config is refused with an error
// naming the field and the bound. Each is far above any workload the server handles.

/// Largest config file read (`config.toml`, `config.pbtxt`): 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest `max_batch_size`: 1,048,576 rows.
pub const MAX_BATCH_SIZE_LIMIT: usize = 1 << 20;
/// Largest `max_queue_rows`: 16,777,216 rows.
pub const MAX_QUEUE_ROWS_LIMIT: usize = 1 << 24;
/// Longest `max_queue_delay_us` / `max_queue_delay_microseconds`: 60 s.
pub const MAX_QUEUE_DELAY_LIMIT: Duration = Duration::from_secs(60);

/// Reads a config file, refusing one larger than [`MAX_CONFIG_BYTES`] before holding it:
/// a config is a page of settings, and a multi-gigabyte file is a mistake or an attack.
pub fn read_config_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut text = String::new();
    // One byte past the bound tells "too large" from "exactly at it".
    f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("config file larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    Ok(text)
}

/// Refuses config text larger than [`MAX_CONFIG_BYTES`].
fn check_config_len(text: &str) -> Result<(), String> {
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "config is {} bytes, more than the {MAX_CONFIG_BYTES} accepted",
            text.len()
        ));
    }
    Ok(())
}

/// `config.toml` as written on disk: the keys every model has, plus its family's own. Sizes
/// are bounded ([`MAX_BATCH_SIZE_LIMIT`] and the other `*_LIMIT` constants of this module); a
/// file over [`MAX_CONFIG_BYTES`] is refused.
///
/// ```toml
/// platform = "xgboost"            # picks the family (the server's --help lists them)
/// model_file = "model.json"       # optional; the family's default names otherwise
/// max_batch_size = 1024
/// max_queue_delay_us = 0          # wait for a fuller batch at most this long
/// max_queue_rows = 262144         # admission capacity in rows
/// version_policy = { latest = 1 } # or "all", or { specific = [1, 3] }
/// input_name = "input__0"         # optional; the family's default otherwise
/// output_name = "output__0"       # optional; the family's default otherwise
/// [limits]                        # optional; the family's load limits
/// max_nodes = 1000000
/// [monitoring]                    # optional; see [`Monitoring`]
/// log_raw = false
/// [feature_store]                 # optional; see [`FeatureStoreInputs`]
/// features = { user_avg_spend = "user_spend:user_avg_spend" }
/// # ...and the family's own keys (threshold, engine, [recommender], ...): see its crate.
/// ```
#[derive(Debug, Clone, Deserialize)]
pub struct TomlConfig {
    /// Model family.
    pub platform: String,
    /// Artifact file name.
    pub model_file: Option<String>,
    /// Largest batch in rows.
    pub max_batch_size: Option<usize>,
    /// Batching delay in microseconds.
    pub max_queue_delay_us: Option<u64>,
    /// Admission capacity in rows.
    pub max_queue_rows: Option<usize>,
    /// Version policy.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Input tensor name.
    pub input_name: Option<String>,
    /// Output tensor name.
    pub output_name: Option<String>,
    /// `[limits]`: load limits, read by the model's family (see [`ModelConfig::limits`]).
    pub limits: Option<toml::Table>,
    /// `[monitoring]`: see [`Monitoring`].
    #[serde(default)]
    pub monitoring: Monitoring,
    /// `[feature_store]`: see [`FeatureStoreInputs`].
    #[serde(default)]
    pub feature_store: FeatureStoreInputs,
    /// Every other key: the family's own.
    #[serde(flatten)]
    pub family: toml::Table,
}

impl ModelConfig {
    /// Reads the config of the model in `dir` (named `name`): `config.toml` first, else
    /// `config.pbtxt`.
    pub fn read(name: &str, dir: &Path) -> Result<Self, RegistryError> {
        let toml_path = dir.join("config.toml");
        let pbtxt_path = dir.join("config.pbtxt");
        if toml_path.is_file() {
            let text = read(&toml_path)?;
            Self::from_toml(name, &text)
        } else if pbtxt_path.is_file() {
            let text = read(&pbtxt_path)?;
            Self::from_pbtxt(name, &text)
        } else {
            Err(RegistryError::NoConfig(name.to_string()))
        }
    }

    /// Parses `config.toml` text.
    pub fn from_toml(name: &str, text: &str) -> Result<Self, RegistryError> {
        let err = |message: String| RegistryError::Toml {
            model: name.to_string(),
            message,
        };
        check_config_len(text).map_err(err)?;
        let t: TomlConfig = toml::from_str(text).map_err(|e| err(e.message().to_string()))?;
        let cfg = ModelConfig {
            name: name.to_string(),
            platform: t.platform,
            model_file: t.model_file,
            source: ConfigSource::Toml,
            max_batch_size: t.max_batch_size.unwrap_or(DEFAULT_MAX_BATCH_SIZE),
            max_queue_delay: Duration::from_micros(t.max_queue_delay_us.unwrap_or(0)),
            max_queue_rows: t.max_queue_rows.unwrap_or(DEFAULT_MAX_QUEUE_ROWS),
            version_policy: t.version_policy,
            input_name: t.input_name,
            output_name: t.output_name,
            parameters: t.family,
            limits: t.limits.unwrap_or_default(),
            monitoring: t.monitoring,
            feature_store: t.feature_store,
        };
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Parses a Triton `config.pbtxt`: `backend` (or `platform`) picks the family, and its
    /// `parameters` become the family's keys, as strings.
    pub fn from_pbtxt(name: &str, text: &str) -> Result<Self, RegistryError> {
        let err = |message: String| RegistryError::Pbtxt {
            model: name.to_string(),
            message,
        };
        check_config_len(text).map_err(err)?;
        let msg = pbtxt::parse(text).map_err(|e| err(e.to_string()))?;
        let platform = msg
            .str("backend")
            .or_else(|| msg.str("platform"))
            .filter(|b| !b.is_empty())
            .ok_or_else(|| err("config.pbtxt sets no backend".into()))?
            .to_string();
        if let Some(n) = msg.str("name")
            && n != name
        {
            return Err(err(format!(
                "config names the model '{n}' but its directory is '{name}'"
            )));
        }
        let mut parameters = toml::Table::new();
        for (key, value) in pbtxt_parameters(&msg) {
            parameters.insert(key, toml::Value::String(value));
        }
        // A number that does not fit an i64 is an error, not a silent default.
        let int_field = |m: &Message, field: &str| -> Result<Option<i64>, RegistryError> {
            match m.str(field) {
                None => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| err(format!("{field} must be an integer within i64, got '{v}'"))),
            }
        };
        let max_batch_size = match int_field(&msg, "max_batch_size")? {
            // Past usize (32-bit targets): the largest, which validation then refuses.
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            // 0 is Triton's "no batch dimension": batch with the default.
            _ => DEFAULT_MAX_BATCH_SIZE,
        };
        // Bounded before it is multiplied into max_queue_rows below.
        check_max("max_batch_size", max_batch_size, MAX_BATCH_SIZE_LIMIT).map_err(err)?;
        let max_queue_delay = match msg.message("dynamic_batching") {
            Some(d) => int_field(d, "max_queue_delay_microseconds")?
                .map(|us| Duration::from_micros(us.max(0).unsigned_abs()))
                .unwrap_or_default(),
            None => Duration::ZERO,
        };
        let tensor_name = |field: &str| {
            msg.messages(field)
                .next()
                .and_then(|t| t.str("name"))
                .map(str::to_string)
        };
        let version_policy = match msg.message("version_policy") {
            None => VersionPolicy::default(),
            Some(vp) => {
                if let Some(l) = vp.message("latest") {
                    VersionPolicy::Latest(l.int("num_versions").unwrap_or(1).max(1) as usize)
                } else if vp.message("all").is_some() {
                    VersionPolicy::All
                } else if let Some(s) = vp.message("specific") {
                    VersionPolicy::Specific(
                        s.ints("versions")
                            .into_iter()
                            .map(|v| v.max(0) as u64)
                            .collect(),
                    )
                } else {
                    return Err(err("version_policy must be latest, all or specific".into()));
                }
            }
        };
        let cfg = ModelConfig {
            name: name.to_string(),
            platform,
            model_file: msg.str("default_model_filename").map(str::to_string),
            source: ConfigSource::TritonPbtxt,
            max_batch_size,
            max_queue_delay,
            max_queue_rows: DEFAULT_MAX_QUEUE_ROWS.max(max_batch_size.saturating_mul(4)),
            version_policy,
            input_name: tensor_name("input"),
            output_name: tensor_name("output"),
            parameters,
            limits: toml::Table::new(),
            monitoring: Monitoring::default(),
            feature_store: FeatureStoreInputs::default(),
        };
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_batch_size == 0 {
            return Err("max_batch_size must be at least 1".into());
        }
        check_max("max_batch_size", self.max_batch_size, MAX_BATCH_SIZE_LIMIT)?;
        check_max("max_queue_rows", self.max_queue_rows, MAX_QUEUE_ROWS_LIMIT)?;
        if self.max_queue_delay > MAX_QUEUE_DELAY_LIMIT {
            return Err(format!(
                "max_queue_delay {:?} is longer than the {:?} accepted",
                self.max_queue_delay, MAX_QUEUE_DELAY_LIMIT
            ));
        }
        if self.max_queue_rows < self.max_batch_size {
            return Err(format!(
                "max_queue_rows ({}) must be at least max_batch_size ({})",
                self.max_queue_rows, self.max_batch_size
            ));
        }
        if self.platform.is_empty() || self.platform.len() > 64 {
            return Err("platform must be a name of 1 to 64 characters".into());
        }
        if let VersionPolicy::Latest(0) = self.version_policy {
            return Err("version_policy latest must keep at least 1 version".into());
        }
        if let Some(f) = &self.model_file
            && (f.contains('/') || f.contains('\\') || f == ".." || f == "." || f.is_empty())
        {
            return Err(format!("model_file '{f}' must be a plain file name"));
        }
        for (input, reference) in &self.feature_store.features {
            if !reference
                .split_once(':')
                .is_some_and(|(v, f)| !v.is_empty() && !f.is_empty())
            {
                return Err(format!(
                    "[feature_store] features.{input} = {reference:?} is not a \"view:feature\" reference"
                ));
            }
        }
        Ok(())
    }

    /// The input tensor's name: the config's, else the family's `default`.
    pub fn input_name_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.input_name.as_deref().unwrap_or(default)
    }

    /// The output tensor's name: the config's, else the family's `default`.
    pub fn output_name_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.output_name.as_deref().unwrap_or(default)
    }
}

/// Refuses `value` past `max`, naming `field` (families use it for their own sizes).
pub fn check_max(field: &str, value: usize, max: usize) -> Result<(), String> {
    if value > max {
        return Err(format!("{field} = {value} is more than the {max} accepted"));
    }
    Ok(())
}

/// `parameters [{ key: "k" value: { string_value: "v" } }]` (or `parameters { key ... }`
/// repeated) as pairs.
fn pbtxt_parameters(msg: &Message) -> Vec<(String, String)> {
    msg.messages("parameters")
        .filter_map(|p| {
            let key = p.str("key")?.to_string();
            let value = p.message("value")?.str("string_value")?.to_string();
            Some((key, value))
        })
        .collect()
}

fn read(path: &Path) -> Result<String, RegistryError> {
    read_config_file(path).map_err(|source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn toml_generic_keys_and_family_keys() {
        let c = ModelConfig::from_toml(
            "fraud",
            r#"
platform = "xgboost"
max_batch_size = 64
max_queue_delay_us = 250
version_policy = { latest = 2 }
feature_names = ["a", "b"]
threshold = 0.7
[recommender]
max_k = 5
[limits]
max_nodes = 10
"#,
        )
        .unwrap();
        assert_eq!(c.platform, "xgboost");
        assert_eq!(c.max_batch_size, 64);
        assert_eq!(c.max_queue_delay, Duration::from_micros(250));
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        assert_eq!(c.input_name_or("input__0"), "input__0");
        // What the registry does not read is the family's, tables included.
        assert_eq!(c.parameters["threshold"].as_float(), Some(0.7));
        assert!(c.parameters["feature_names"].is_array());
        assert!(c.parameters["recommender"].is_table());
        assert!(!c.parameters.contains_key("platform"));
        assert_eq!(c.limits["max_nodes"].as_integer(), Some(10));
    }

    #[test]
    fn toml_policies_parse() {
        let all = ModelConfig::from_toml("m", "platform = \"lightgbm\"\nversion_policy = \"all\"")
            .unwrap();
        assert_eq!(all.version_policy, VersionPolicy::All);
        let spec = ModelConfig::from_toml(
            "m",
            "platform = \"lightgbm\"\nversion_policy = { specific = [1, 3] }",
        )
        .unwrap();
        assert_eq!(spec.version_policy, VersionPolicy::Specific(vec![1, 3]));
    }

    #[test]
    fn toml_rejects_unknown_and_bad_values() {
        assert!(ModelConfig::from_toml("m", "platform = \"\"").is_err());
        assert!(ModelConfig::from_toml("m", "platform = 3").is_err());
        assert!(ModelConfig::from_toml("m", "threshold = 0.5").is_err());
        assert!(ModelConfig::from_toml("m", "platform = \"xgboost\"\nmax_batch_size = 0").is_err());
        assert!(
            ModelConfig::from_toml("m", "platform = \"xgboost\"\nmodel_file = \"../x\"").is_err()
        );
        assert!(ModelConfig::from_toml("m", "platform = [").is_err());
    }

    #[test]
    fn policy_selects_versions() {
        let disk = [3, 1, 2, 10];
        assert_eq!(VersionPolicy::Latest(1).select(&disk), vec![10]);
        assert_eq!(VersionPolicy::Latest(2).select(&disk), vec![3, 10]);
        assert_eq!(VersionPolicy::All.select(&disk), vec![1, 2, 3, 10]);
        assert_eq!(VersionPolicy::Specific(vec![2, 7]).select(&disk), vec![2]);
    }

    const FIL: &str = r#"
name: "fil_model"
backend: "fil"
max_batch_size: 32768
input [
  {
    name: "input__0"
    data_type: TYPE_FP32
    dims: [ 30 ]
  }
]
output [
  {
    name: "output__0"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }
]
instance_group [{ kind: KIND_CPU }]
version_policy: { specific: { versions: [1, 2] } }
parameters [
  {
    key: "model_type"
    value: { string_value: "xgboost_json" }
  },
  {
    key: "output_class"
    value: { string_value: "true" }
  },
  {
    key: "threshold"
    value: { string_value: "0.4" }
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 100
}
"#;

    #[test]
    fn triton_config_is_read() {
        let c = ModelConfig::from_pbtxt("fil_model", FIL).unwrap();
        assert_eq!(c.platform, "fil");
        assert_eq!(c.source, ConfigSource::TritonPbtxt);
        assert_eq!(c.parameters["model_type"].as_str(), Some("xgboost_json"));
        assert_eq!(c.parameters["output_class"].as_str(), Some("true"));
        assert_eq!(c.parameters["threshold"].as_str(), Some("0.4"));
        assert_eq!(c.max_batch_size, 32768);
        assert_eq!(c.max_queue_delay, Duration::from_micros(100));
        assert_eq!(c.version_policy, VersionPolicy::Specific(vec![1, 2]));
    }

    #[test]
    fn the_backend_is_the_platform_and_names_must_agree() {
        let onnx = FIL.replace("backend: \"fil\"", "backend: \"onnxruntime\"");
        assert_eq!(
            ModelConfig::from_pbtxt("fil_model", &onnx)
                .unwrap()
                .platform,
            "onnxruntime"
        );
        let none = FIL.replace("backend: \"fil\"", "");
        assert!(ModelConfig::from_pbtxt("fil_model", &none).is_err());
        assert!(ModelConfig::from_pbtxt("other_name", FIL).is_err());
    }

    #[test]
    fn sizes_past_their_bounds_are_refused_naming_the_field() {
        for (field, bad) in [
            ("max_batch_size", "1048577"),
            ("max_batch_size", "9223372036854775807"),
            ("max_queue_rows", "16777217"),
            ("max_queue_delay_us", "60000001"),
            ("max_queue_delay_us", "18446744073709551615"),
            ("max_batch_size", "1e18"),
        ] {
            let toml = format!("platform = \"bert-embedding\"\n{field} = {bad}\n");
            let e = ModelConfig::from_toml("m", &toml).unwrap_err().to_string();
            // toml itself refuses what is not an i64 (or not an integer) with its own words.
            if bad.parse::<i64>().is_ok() && bad != "18446744073709551615" {
                assert!(e.contains(field.trim_end_matches("_us")), "{field}: {e}");
            }
        }
        // At the bounds is fine.
        let c = ModelConfig::from_toml(
            "m",
            "platform = \"xgboost\"\nmax_batch_size = 1048576\nmax_queue_rows = 16777216\nmax_queue_delay_us = 60000000\n",
        )
        .unwrap();
        assert_eq!(c.max_batch_size, MAX_BATCH_SIZE_LIMIT);
    }

    #[test]
    fn pbtxt_sizes_are_bounded_before_use() {
        let with =
            |mbs: &str| FIL.replace("max_batch_size: 32768", &format!("max_batch_size: {mbs}"));
        // 10^18 rows once overflowed `max_batch_size * 4` (a panic in debug builds).
        for bad in [
            "1000000000000000000",
            "9223372036854775807",
            "99999999999999999999",
            "1048577",
            "x",
        ] {
            let e = ModelConfig::from_pbtxt("fil_model", &with(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("max_batch_size"), "{bad}: {e}");
        }
        let c = ModelConfig::from_pbtxt("fil_model", &with("1048576")).unwrap();
        assert_eq!((c.max_batch_size, c.max_queue_rows), (1 << 20, 1 << 22));
        // Triton's 0 (no batch dimension) and negatives keep the default.
        assert_eq!(
            ModelConfig::from_pbtxt("fil_model", &with("0"))
                .unwrap()
                .max_batch_size,
            DEFAULT_MAX_BATCH_SIZE
        );
        let slow = FIL.replace(
            "max_queue_delay_microseconds: 100",
            "max_queue_delay_microseconds: 60000001",
        );
        assert!(ModelConfig::from_pbtxt("fil_model", &slow).is_err());
        let huge = FIL.replace(
            "max_queue_delay_microseconds: 100",
            "max_queue_delay_microseconds: 99999999999999999999",
        );
        assert!(ModelConfig::from_pbtxt("fil_model", &huge).is_err());
    }

    #[test]
    fn config_files_past_the_size_bound_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("platform = \"xgboost\"\n");
        text.push_str(&"# padding\n".repeat((MAX_CONFIG_BYTES as usize) / 10 + 1));
        std::fs::write(dir.path().join("config.toml"), &text).unwrap();
        let e = ModelConfig::read("m", dir.path()).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        assert!(ModelConfig::from_toml("m", &text).is_err());
        assert!(ModelConfig::from_pbtxt("m", &text).is_err());
        // Just under it parses.
        text.truncate(MAX_CONFIG_BYTES as usize - 20);
        assert!(ModelConfig::from_toml("m", &text).is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep_toml = format!(
            "platform = \"xgboost\"\nfeature_names = {}",
            "[".repeat(100_000)
        );
        assert!(ModelConfig::from_toml("m", &deep_toml).is_err());
        let deep_table = format!("platform = \"xgboost\"\nx = {}", "{ a = ".repeat(50_000));
        assert!(ModelConfig::from_toml("m", &deep_table).is_err());
        let dotted = format!(
            "platform = \"xgboost\"\n{} = 1",
            vec!["a"; 50_000].join(".")
        );
        assert!(ModelConfig::from_toml("m", &dotted).is_err());
        let deep_pbtxt = format!("backend: \"fil\"\n{}", "a { ".repeat(100_000));
        assert!(ModelConfig::from_pbtxt("m", &deep_pbtxt).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::select;
        use std::time::Instant;

        /// Every parse ends within this, even in a debug build on a loaded machine: parsing
        /// is linear and the inputs are small.
        const PARSE_BOUND: Duration = Duration::from_secs(1);

        /// Parses `text` both ways, each under the time bound; whatever parses has every
        /// size within its documented bound.
        fn check(text: &str) {
            for pbtxt in [false, true] {
                let started = Instant::now();
                let parsed = if pbtxt {
                    ModelConfig::from_pbtxt("fil_model", text)
                } else {
                    ModelConfig::from_toml("fil_model", text)
                };
                let took = started.elapsed();
                assert!(took < PARSE_BOUND, "took {took:?} on {text:?}");
                if let Ok(c) = parsed {
                    assert!(c.max_batch_size >= 1 && c.max_batch_size <= MAX_BATCH_SIZE_LIMIT);
                    assert!(c.max_queue_rows <= MAX_QUEUE_ROWS_LIMIT);
                    assert!(c.max_queue_delay <= MAX_QUEUE_DELAY_LIMIT);
                    assert!(!c.platform.is_empty() && c.platform.len() <= 64);
                }
            }
        }

        /// Valid configs to mutate: the FIL example and TOML configs of each platform kind.
        const BASES: [&str; 4] = [
            FIL,
            "platform = \"xgboost\"\nmax_batch_size = 64\nmax_queue_delay_us = 250\nmax_queue_rows = 4096\nversion_policy = { latest = 2 }\nfeature_names = [\"a\", \"b\"]\nthreshold = 0.7\noutput_class = true\n",
            "platform = \"bert-embedding\"\nmax_batch_tokens = 512\nmax_batch_requests = 4\nmax_queue_tokens = 8192\nmax_client_batch_size = 32\nengine = \"onnxruntime\"\nintra_op_threads = 2\nquantize = \"int8\"\n",
            "platform = \"recommender\"\nversion_policy = { specific = [1, 3] }\n[recommender]\nmax_k = 50\nmax_in_flight = 16\nunknown_users = \"not_found\"\ncontent_weight = 0.5\n",
        ];

        /// Pieces of both syntaxes and numbers that have broken parsers before.
        const TOKENS: [&str; 48] = [
            "max_batch_size",
            "max_queue_rows",
            "max_queue_delay_us",
            "max_batch_tokens",
            "max_batch_requests",
            "max_queue_tokens",
            "max_client_batch_size",
            "intra_op_threads",
            "max_k",
            "max_in_flight",
            "max_queue_delay_microseconds",
            "platform = \"xgboost\"\n",
            "platform = \"recommender\"\n",
            "[recommender]\n",
            "backend: \"fil\"\n",
            "parameters",
            "key",
            "value",
            "string_value",
            "version_policy",
            "dynamic_batching",
            "latest",
            "specific",
            "versions",
            "num_versions",
            " = ",
            ": ",
            "{",
            "}",
            "[",
            "]",
            "<",
            ">",
            "\"",
            "'",
            "\\",
            "\n",
            ", ",
            "#",
            "1e18",
            "18446744073709551615",
            "9223372036854775807",
            "-9223372036854775808",
            "0",
            "-1",
            "1048577",
            "nan",
            "\"\"",
        ];

        /// Applies `(position, op, token)` edits to `base`: delete a byte, insert a token, or
        /// overwrite the bytes at the position with a token. Everything is ASCII, so the
        /// result stays UTF-8.
        fn mutate(base: &str, edits: &[(usize, u8, usize)]) -> String {
            let mut b = base.as_bytes().to_vec();
            for &(pos, op, tok) in edits {
                let tok = TOKENS[tok % TOKENS.len()].as_bytes();
                let at = pos % (b.len() + 1);
                match op {
                    0 if at < b.len() => {
                        b.remove(at);
                    }
                    1 => {
                        b.splice(at..at, tok.iter().copied());
                    }
                    _ => {
                        let end = (at + tok.len()).min(b.len());
                        b.splice(at..end, tok.iter().copied());
                    }
                }
            }
            String::from_utf8_lossy(&b).into_owned()
        }

        const NUMERIC_FIELDS: [&str; 10] = [
            "max_batch_size",
            "max_queue_rows",
            "max_queue_delay_us",
            "max_batch_tokens",
            "max_batch_requests",
            "max_queue_tokens",
            "max_client_batch_size",
            "intra_op_threads",
            "threshold",
            "version_policy = { latest",
        ];

        fn number() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                any::<u64>().prop_map(|v| v.to_string()),
                (0u32..64).prop_map(|p| (1u64 << p).to_string()),
                any::<f64>().prop_map(|v| format!("{v:e}")),
                select(
                    &[
                        "1e18",
                        "inf",
                        "nan",
                        "-0",
                        "0x7fffffffffffffff",
                        "1_000_000_000_000"
                    ][..]
                )
                .prop_map(str::to_string),
            ]
        }

        proptest! {
            // Cases: proptest's default (256), or PROPTEST_CASES.
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn any_text_parses_or_errs(text in any::<String>()) {
                check(&text);
            }

            #[test]
            fn token_soup_parses_or_errs(tokens in prop::collection::vec(select(&TOKENS[..]), 0..300)) {
                check(&tokens.concat());
            }

            #[test]
            fn mutated_valid_configs_parse_or_err(
                base in select(&BASES[..]),
                edits in prop::collection::vec((any::<usize>(), 0u8..3, any::<usize>()), 1..12),
            ) {
                check(&mutate(base, &edits));
            }

            #[test]
            fn any_number_in_a_size_field_is_bounded(
                field in select(&NUMERIC_FIELDS[..]),
                value in number(),
                recommender in any::<bool>(),
            ) {
                let close = if field.contains('{') { " }" } else { "" };
                let text = if recommender {
                    format!("platform = \"recommender\"\n[recommender]\nmax_k = {value}\nmax_in_flight = {value}\n")
                } else {
                    format!("platform = \"bert-embedding\"\n{field} = {value}{close}\n")
                };
                check(&text);
                let pbtxt = FIL
                    .replace("max_batch_size: 32768", &format!("max_batch_size: {value}"))
                    .replace("max_queue_delay_microseconds: 100", &format!("max_queue_delay_microseconds: {value}"))
                    .replace("versions: [1, 2]", &format!("versions: [{value}, 2]"));
                check(&pbtxt);
            }
        }
    }
}
