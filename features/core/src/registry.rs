//! Feature definitions: feature views (their entities' join keys and types, features,
//! TTL, push source), entities and feature services of one project, read from Feast's
//! registry file or from an infermesh TOML.
//!
//! **Feast's `registry.db`** (what `feast apply` writes with a local file registry) is one
//! serialized `feast.core.Registry`, no header. From it: entities (`__dummy` aside), feature
//! views and stream feature views (disabled ones left out; a view in state CREATED,
//! GENERATED or MATERIALIZING is kept but refused when read, as Feast refuses it), feature
//! services, and the project. Join keys and their types come from a view's
//! `entity_columns`, as Feast takes them (an entity's own `value_type` is often unset).
//!
//! **The TOML**, for users without Feast:
//!
//! ```toml
//! project = "infermesh"
//!
//! [[entities]]
//! name = "user"
//! join_key = "user_id"     # default: the name
//! value_type = "INT64"     # Feast's type names (INT64, STRING, ...) or its SDK's (Int64, ...)
//!
//! [[feature_views]]
//! name = "user_spend"
//! entities = ["user"]
//! ttl = "30d"              # humantime; absent or "0s": no age limit
//! push_source = "user_spend_push"     # optional: the name `/push` writes through
//! timestamp_field = "event_timestamp" # the event-time column of materialised files
//! features = [{ name = "user_avg_spend", type = "DOUBLE" }]
//!
//! [[feature_services]]
//! name = "fraud"
//! features = ["user_spend", "device_risk:device_risk_score"]  # a whole view, or view:feature
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use prost::Message;
use serde::Deserialize;

use crate::FeatureError;
use crate::key;
use crate::registry_proto as pb;
use crate::types::value_type::Enum as ValueType;

/// The largest registry file read (a bound on what decoding it may allocate).
pub const MAX_REGISTRY_BYTES: u64 = 256 << 20;

/// A join key of a feature view.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinKey {
    /// The column name.
    pub name: String,
    /// Its type (part of the Redis key).
    pub value_type: ValueType,
}

/// A feature of a view.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Its name in the view.
    pub name: String,
    /// Its type.
    pub value_type: ValueType,
    /// Its Redis hash field ([`key::feature_field`]).
    pub field: [u8; 4],
}

/// A feature view.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureView {
    /// Its name.
    pub name: String,
    /// The names of its entities.
    pub entities: Vec<String>,
    /// The join keys of its entities, with their types.
    pub join_keys: Vec<JoinKey>,
    /// Its features, in definition order.
    pub features: Vec<Feature>,
    /// Values older than this are served as OUTSIDE_MAX_AGE (`None`: no limit).
    pub ttl: Option<Duration>,
    /// Its Redis timestamp field ([`key::timestamp_field`]).
    pub timestamp_field_key: Vec<u8>,
    /// The push source that writes it, if any.
    pub push_source: Option<String>,
    /// The event-time column of its source files.
    pub timestamp_field: Option<String>,
    /// Why it cannot be served now (Feast's materialisation states), if so.
    pub unavailable: Option<String>,
}

impl FeatureView {
    /// A feature by name.
    pub fn feature(&self, name: &str) -> Option<(usize, &Feature)> {
        self.features
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == name)
    }
}

/// An entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// Its name.
    pub name: String,
    /// Its join key.
    pub join_key: String,
    /// Its declared type (INVALID when Feast left it unset).
    pub value_type: ValueType,
}

/// One view of a feature service.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// The view.
    pub view: String,
    /// The name its features are prefixed with under `full_feature_names` (the view's name
    /// unless aliased).
    pub name_to_use: String,
    /// Its features taken (all of the view's when empty).
    pub features: Vec<String>,
}

/// A resolved request: per view (in order of first reference), the features asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Index of the view in [`FeatureRegistry::views`].
    pub view: usize,
    /// The prefix under `full_feature_names`.
    pub name_to_use: String,
    /// Indexes of the features in the view, in request order.
    pub features: Vec<usize>,
}

/// One project's feature definitions.
#[derive(Debug, Clone, Default)]
pub struct FeatureRegistry {
    project: String,
    views: Vec<FeatureView>,
    view_index: HashMap<String, usize>,
    entities: Vec<Entity>,
    services: HashMap<String, Vec<Projection>>,
}

impl FeatureRegistry {
    /// Loads `path`: a `.toml` file as infermesh's TOML, anything else as Feast's registry
    /// file. `project` picks the project (needed when the file holds several).
    pub fn load(path: &Path, project: Option<&str>) -> Result<Self, FeatureError> {
        let err = |message: String| FeatureError::Registry {
            path: path.display().to_string(),
            message,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .len();
        if len > MAX_REGISTRY_BYTES {
            return Err(err(format!(
                "{len} bytes is more than the {MAX_REGISTRY_BYTES} read"
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let toml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if toml {
            let text = std::str::from_utf8(&bytes).map_err(|e| err(e.to_string()))?;
            Self::from_toml(text, project).map_err(err)
        } else {
            Self::from_feast(&bytes, project).map_err(err)
        }
    }

    /// Reads a serialized `feast.core.Registry`.
    pub fn from_feast(bytes: &[u8], project: Option<&str>) -> Result<Self, String> {
        let reg = pb::Registry::decode(bytes)
            .map_err(|e| format!("not a Feast registry (feast.core.Registry): {e}"))?;
        let mut projects: Vec<String> = reg
            .projects
            .iter()
            .filter_map(|p| p.spec.as_ref().map(|s| s.name.clone()))
            .chain(
                reg.feature_views
                    .iter()
                    .filter_map(|v| v.spec.as_ref().map(|s| s.project.clone())),
            )
            .chain(
                reg.entities
                    .iter()
                    .filter_map(|e| e.spec.as_ref().map(|s| s.project.clone())),
            )
            .filter(|p| !p.is_empty())
            .collect();
        projects.sort();
        projects.dedup();
        let project = pick_project(&projects, project)?;
        let in_project = |p: &str| p.is_empty() || p == project;
        let entities: Vec<Entity> = reg
            .entities
            .iter()
            .filter_map(|e| e.spec.as_ref())
            .filter(|s| in_project(&s.project) && s.name != "__dummy")
            .map(|s| Entity {
                name: s.name.clone(),
                join_key: if s.join_key.is_empty() {
                    s.name.clone()
                } else {
                    s.join_key.clone()
                },
                value_type: ValueType::try_from(s.value_type).unwrap_or(ValueType::Invalid),
            })
            .collect();
        // Feature views and stream feature views share what serving reads.
        let plain = reg.feature_views.iter().filter_map(|v| {
            let s = v.spec.as_ref().filter(|s| !s.disabled)?;
            Some(ViewSpec {
                name: &s.name,
                project: &s.project,
                entities: &s.entities,
                entity_columns: &s.entity_columns,
                features: &s.features,
                ttl: s.ttl.as_ref(),
                stream_source: s.stream_source.as_ref(),
                batch_source: s.batch_source.as_ref(),
                state: v.meta.as_ref().map(|m| m.state).unwrap_or_default(),
            })
        });
        let stream = reg.stream_feature_views.iter().filter_map(|v| {
            let s = v.spec.as_ref()?;
            Some(ViewSpec {
                name: &s.name,
                project: &s.project,
                entities: &s.entities,
                entity_columns: &s.entity_columns,
                features: &s.features,
                ttl: s.ttl.as_ref(),
                stream_source: s.stream_source.as_ref(),
                batch_source: s.batch_source.as_ref(),
                state: v.meta.as_ref().map(|m| m.state).unwrap_or_default(),
            })
        });
        let views = plain
            .chain(stream)
            .filter(|v| in_project(v.project))
            .map(|v| feast_view(&v, &entities))
            .collect::<Result<Vec<_>, String>>()?;
        let services = reg
            .feature_services
            .iter()
            .filter_map(|f| f.spec.as_ref())
            .filter(|s| in_project(&s.project))
            .map(|s| {
                let projections = s
                    .features
                    .iter()
                    .map(|p| Projection {
                        view: p.feature_view_name.clone(),
                        name_to_use: if p.feature_view_name_alias.is_empty() {
                            p.feature_view_name.clone()
                        } else {
                            p.feature_view_name_alias.clone()
                        },
                        features: p.feature_columns.iter().map(|c| c.name.clone()).collect(),
                    })
                    .collect();
                (s.name.clone(), projections)
            })
            .collect();
        Self::build(project.to_owned(), views, entities, services)
    }

    /// Reads infermesh's TOML (see the module doc).
    pub fn from_toml(text: &str, project: Option<&str>) -> Result<Self, String> {
        let file: TomlFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(p) = project
            && p != file.project
        {
            return Err(format!(
                "the file defines project {:?}, not {p:?}",
                file.project
            ));
        }
        let entities = file
            .entities
            .iter()
            .map(|e| {
                Ok(Entity {
                    name: e.name.clone(),
                    join_key: e.join_key.clone().unwrap_or_else(|| e.name.clone()),
                    value_type: parse_type(&e.value_type)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut views = Vec::new();
        for v in &file.feature_views {
            let join_keys = v
                .entities
                .iter()
                .map(|name| {
                    let e = entities
                        .iter()
                        .find(|e| &e.name == name)
                        .ok_or_else(|| format!("view {:?}: no entity {name:?}", v.name))?;
                    Ok(JoinKey {
                        name: e.join_key.clone(),
                        value_type: e.value_type,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let ttl = match &v.ttl {
                None => None,
                Some(t) => Some(
                    humantime::parse_duration(t)
                        .map_err(|e| format!("view {:?}: ttl {t:?}: {e}", v.name))?,
                )
                .filter(|d| !d.is_zero()),
            };
            let features = v
                .features
                .iter()
                .map(|f| {
                    Ok(Feature {
                        field: key::feature_field(&v.name, &f.name),
                        name: f.name.clone(),
                        value_type: parse_type(&f.value_type)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            views.push(FeatureView {
                timestamp_field_key: key::timestamp_field(&v.name),
                name: v.name.clone(),
                entities: v.entities.clone(),
                join_keys,
                features,
                ttl,
                push_source: v.push_source.clone(),
                timestamp_field: v.timestamp_field.clone(),
                unavailable: None,
            });
        }
        let mut services = HashMap::new();
        for s in &file.feature_services {
            let mut projections: Vec<Projection> = Vec::new();
            for r in &s.features {
                let (view, feature) = match r.split_once(':') {
                    Some((v, f)) => (v, Some(f)),
                    None => (r.as_str(), None),
                };
                let at = match projections.iter().position(|p| p.view == view) {
                    Some(i) => i,
                    None => {
                        projections.push(Projection {
                            view: view.to_owned(),
                            name_to_use: view.to_owned(),
                            features: Vec::new(),
                        });
                        projections.len() - 1
                    }
                };
                if let Some(f) = feature {
                    projections[at].features.push(f.to_owned());
                }
            }
            services.insert(s.name.clone(), projections);
        }
        Self::build(file.project, views, entities, services)
    }

    fn build(
        project: String,
        views: Vec<FeatureView>,
        entities: Vec<Entity>,
        services: HashMap<String, Vec<Projection>>,
    ) -> Result<Self, String> {
        let mut view_index = HashMap::new();
        for (i, v) in views.iter().enumerate() {
            if view_index.insert(v.name.clone(), i).is_some() {
                return Err(format!("feature view {:?} is defined twice", v.name));
            }
            let mut names: Vec<&str> = v.features.iter().map(|f| f.name.as_str()).collect();
            names.sort_unstable();
            if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                return Err(format!("view {:?}: feature {:?} twice", v.name, w[0]));
            }
        }
        for (name, projections) in &services {
            for p in projections {
                let view = view_index.get(&p.view).map(|&i| &views[i]).ok_or_else(|| {
                    format!("feature service {name:?}: no feature view {:?}", p.view)
                })?;
                if let Some(f) = p.features.iter().find(|f| view.feature(f).is_none()) {
                    return Err(format!(
                        "feature service {name:?}: view {:?} has no feature {f:?}",
                        p.view
                    ));
                }
            }
        }
        Ok(Self {
            project,
            views,
            view_index,
            entities,
            services,
        })
    }

    /// The project.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// Every feature view.
    pub fn views(&self) -> &[FeatureView] {
        &self.views
    }

    /// Every entity.
    pub fn entities(&self) -> &[Entity] {
        &self.entities
    }

    /// A view by name.
    pub fn view(&self, name: &str) -> Option<(usize, &FeatureView)> {
        self.view_index.get(name).map(|&i| (i, &self.views[i]))
    }

    /// The views a push source writes.
    pub fn views_of_push_source(&self, source: &str) -> Vec<usize> {
        (0..self.views.len())
            .filter(|&i| self.views[i].push_source.as_deref() == Some(source))
            .collect()
    }

    /// The join key an entity name or join key stands for (`feast serve` takes either).
    pub fn join_key_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.entities
            .iter()
            .find(|e| e.name == name && !self.is_join_key(name))
            .map_or(name, |e| e.join_key.as_str())
    }

    /// The type of a join key: the first view's that declares one, else its entity's
    /// (INVALID when neither says: a request's values are then taken as they come).
    pub fn join_key_type(&self, join_key: &str) -> ValueType {
        self.views
            .iter()
            .flat_map(|v| &v.join_keys)
            .find(|k| k.name == join_key && k.value_type != ValueType::Invalid)
            .map(|k| k.value_type)
            .or_else(|| {
                self.entities
                    .iter()
                    .find(|e| e.join_key == join_key && e.value_type != ValueType::Invalid)
                    .map(|e| e.value_type)
            })
            .unwrap_or(ValueType::Invalid)
    }

    /// The column names a table may give `join_key` of `view` under: the join key, then the
    /// name of the view's entity it belongs to (`feast serve` takes either).
    pub fn key_column_names<'a>(&self, view: &'a FeatureView, join_key: &'a str) -> Vec<&'a str> {
        let mut names = vec![join_key];
        names.extend(
            view.entities
                .iter()
                .find(|e| self.join_key_of(e) == join_key && e.as_str() != join_key)
                .map(String::as_str),
        );
        names
    }

    fn is_join_key(&self, name: &str) -> bool {
        self.views
            .iter()
            .any(|v| v.join_keys.iter().any(|k| k.name == name))
    }

    /// Resolves `view:feature` references, grouped by view in order of first reference.
    pub fn select(&self, refs: &[String]) -> Result<Vec<Selection>, FeatureError> {
        let mut out: Vec<Selection> = Vec::new();
        for r in refs {
            let Some((view_name, feature)) = r.split_once(':') else {
                return Err(FeatureError::InvalidArgument(format!(
                    "feature reference {r:?} is not \"view:feature\""
                )));
            };
            let (vi, view) = self.view(view_name).ok_or_else(|| {
                FeatureError::NotFound(format!(
                    "Feature view {view_name} does not exist in project {}",
                    self.project
                ))
            })?;
            let (fi, _) = view.feature(feature).ok_or_else(|| {
                FeatureError::NotFound(format!(
                    "Feature {feature} not found in feature view {view_name}"
                ))
            })?;
            match out.iter_mut().find(|s| s.view == vi) {
                Some(s) => {
                    if !s.features.contains(&fi) {
                        s.features.push(fi);
                    }
                }
                None => out.push(Selection {
                    view: vi,
                    name_to_use: view_name.to_owned(),
                    features: vec![fi],
                }),
            }
        }
        Ok(out)
    }

    /// Resolves a feature service.
    pub fn select_service(&self, name: &str) -> Result<Vec<Selection>, FeatureError> {
        let projections = self.services.get(name).ok_or_else(|| {
            FeatureError::NotFound(format!(
                "Feature service {name} does not exist in project {}",
                self.project
            ))
        })?;
        projections
            .iter()
            .map(|p| {
                let (vi, view) = self
                    .view(&p.view)
                    .ok_or_else(|| FeatureError::NotFound(format!("no feature view {}", p.view)))?;
                let features = if p.features.is_empty() {
                    (0..view.features.len()).collect()
                } else {
                    p.features
                        .iter()
                        .filter_map(|f| view.feature(f).map(|(i, _)| i))
                        .collect()
                };
                Ok(Selection {
                    view: vi,
                    name_to_use: p.name_to_use.clone(),
                    features,
                })
            })
            .collect()
    }
}

fn pick_project<'a>(projects: &'a [String], wanted: Option<&'a str>) -> Result<&'a str, String> {
    match wanted {
        Some(p) if projects.iter().any(|q| q == p) => Ok(p),
        Some(p) => Err(format!(
            "no project {p:?} in the registry (it has {projects:?})"
        )),
        None => match projects {
            [one] => Ok(one),
            [] => Err("the registry defines no project".into()),
            many => Err(format!(
                "the registry has several projects ({many:?}); pick one with --project"
            )),
        },
    }
}

/// What serving reads of a Feast feature view or stream feature view.
struct ViewSpec<'a> {
    name: &'a str,
    project: &'a str,
    entities: &'a [String],
    entity_columns: &'a [pb::FeatureSpecV2],
    features: &'a [pb::FeatureSpecV2],
    ttl: Option<&'a prost_types::Duration>,
    stream_source: Option<&'a pb::DataSource>,
    batch_source: Option<&'a pb::DataSource>,
    state: i32,
}

fn feast_view(v: &ViewSpec<'_>, entities: &[Entity]) -> Result<FeatureView, String> {
    let ViewSpec {
        name,
        entities: entity_names,
        entity_columns,
        features,
        ttl,
        stream_source,
        batch_source,
        state,
        ..
    } = *v;
    let join_keys = if entity_columns.is_empty() {
        entity_names
            .iter()
            .filter(|n| n.as_str() != "__dummy")
            .map(|n| {
                let e = entities
                    .iter()
                    .find(|e| &e.name == n)
                    .ok_or_else(|| format!("view {name:?}: no entity {n:?}"))?;
                Ok(JoinKey {
                    name: e.join_key.clone(),
                    value_type: e.value_type,
                })
            })
            .collect::<Result<Vec<_>, String>>()?
    } else {
        entity_columns
            .iter()
            .map(|c| JoinKey {
                name: c.name.clone(),
                value_type: ValueType::try_from(c.value_type).unwrap_or(ValueType::Invalid),
            })
            .collect()
    };
    let ttl = ttl
        .map(|d| {
            Duration::new(
                u64::try_from(d.seconds).unwrap_or(0),
                u32::try_from(d.nanos).unwrap_or(0),
            )
        })
        .filter(|d| !d.is_zero());
    let push_source = stream_source
        .filter(|s| s.r#type == pb::data_source::SourceType::PushSource as i32)
        .map(|s| s.name.clone());
    let timestamp_field = batch_source
        .or_else(|| stream_source.and_then(|s| s.batch_source.as_deref()))
        .map(|s| s.timestamp_field.clone())
        .filter(|f| !f.is_empty());
    let unavailable = match pb::FeatureViewState::try_from(state) {
        Ok(pb::FeatureViewState::StateUnspecified | pb::FeatureViewState::AvailableOnline) => None,
        Ok(s) => Some(format!(
            "Feature view '{name}' is in state '{}' and cannot serve features",
            s.as_str_name()
        )),
        Err(_) => Some(format!(
            "Feature view '{name}' is in an unknown state {state}"
        )),
    };
    Ok(FeatureView {
        name: name.to_owned(),
        entities: entity_names
            .iter()
            .filter(|n| n.as_str() != "__dummy")
            .cloned()
            .collect(),
        join_keys,
        features: features
            .iter()
            .map(|f| Feature {
                name: f.name.clone(),
                value_type: ValueType::try_from(f.value_type).unwrap_or(ValueType::Invalid),
                field: key::feature_field(name, &f.name),
            })
            .collect(),
        ttl,
        timestamp_field_key: key::timestamp_field(name),
        push_source,
        timestamp_field,
        unavailable,
    })
}

/// A type name: Feast's ValueType names (`INT64`) or its SDK's (`Int64`, `Float64`).
fn parse_type(name: &str) -> Result<ValueType, String> {
    let upper = name.to_ascii_uppercase();
    let sdk = match upper.as_str() {
        "FLOAT64" => Some(ValueType::Double),
        "FLOAT32" => Some(ValueType::Float),
        "UNIXTIMESTAMP" => Some(ValueType::UnixTimestamp),
        _ => None,
    };
    sdk.or_else(|| ValueType::from_str_name(&upper))
        .filter(|t| *t != ValueType::Invalid)
        .ok_or_else(|| format!("unknown value type {name:?}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    project: String,
    #[serde(default)]
    entities: Vec<TomlEntity>,
    #[serde(default)]
    feature_views: Vec<TomlView>,
    #[serde(default)]
    feature_services: Vec<TomlService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlEntity {
    name: String,
    join_key: Option<String>,
    value_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlView {
    name: String,
    entities: Vec<String>,
    ttl: Option<String>,
    push_source: Option<String>,
    timestamp_field: Option<String>,
    features: Vec<TomlFeature>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFeature {
    name: String,
    #[serde(rename = "type")]
    value_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlService {
    name: String,
    features: Vec<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TOML: &str = r#"
project = "infermesh"

[[entities]]
name = "user"
join_key = "user_id"
value_type = "INT64"

[[entities]]
name = "device"
join_key = "device_id"
value_type = "String"

[[feature_views]]
name = "user_spend"
entities = ["user"]
ttl = "30d"
push_source = "user_spend_push"
features = [{ name = "user_avg_spend", type = "Float64" }]

[[feature_views]]
name = "device_risk"
entities = ["device"]
features = [{ name = "device_risk_score", type = "DOUBLE" }, { name = "seen", type = "INT64" }]

[[feature_services]]
name = "fraud"
features = ["user_spend", "device_risk:device_risk_score"]
"#;

    #[test]
    fn toml_definitions_load() {
        let r = FeatureRegistry::from_toml(TOML, None).unwrap();
        assert_eq!(r.project(), "infermesh");
        let (_, v) = r.view("user_spend").unwrap();
        assert_eq!(v.ttl, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(
            v.join_keys,
            vec![JoinKey {
                name: "user_id".into(),
                value_type: ValueType::Int64
            }]
        );
        assert_eq!(v.features[0].value_type, ValueType::Double);
        assert_eq!(
            v.features[0].field,
            key::feature_field("user_spend", "user_avg_spend")
        );
        assert_eq!(r.views_of_push_source("user_spend_push"), vec![0]);
        assert_eq!(r.join_key_of("device"), "device_id");
        assert_eq!(r.join_key_of("device_id"), "device_id");
        assert_eq!(r.join_key_type("device_id"), ValueType::String);
        assert_eq!(r.join_key_type("user_id"), ValueType::Int64);
        assert_eq!(r.join_key_type("nope"), ValueType::Invalid);
        let (_, spend) = r.view("user_spend").unwrap();
        assert_eq!(r.key_column_names(spend, "user_id"), ["user_id", "user"]);
        let s = r.select_service("fraud").unwrap();
        assert_eq!((s[0].features.len(), s[1].features.clone()), (1, vec![0]));
        let s = r
            .select(&[
                "device_risk:seen".into(),
                "user_spend:user_avg_spend".into(),
                "device_risk:device_risk_score".into(),
            ])
            .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].features, vec![1, 0]);
    }

    #[test]
    fn bad_definitions_and_references_are_refused() {
        assert!(FeatureRegistry::from_toml(TOML, Some("other")).is_err());
        assert!(FeatureRegistry::from_toml("project = 1", None).is_err());
        let bad_type = TOML.replace("\"INT64\"", "\"INT65\"");
        assert!(FeatureRegistry::from_toml(&bad_type, None).is_err());
        let twice = format!(
            "{TOML}\n[[feature_views]]\nname = \"user_spend\"\nentities = []\nfeatures = []\n"
        );
        assert!(FeatureRegistry::from_toml(&twice, None).is_err());
        let r = FeatureRegistry::from_toml(TOML, None).unwrap();
        assert!(matches!(
            r.select(&["nope:x".into()]),
            Err(FeatureError::NotFound(_))
        ));
        assert!(matches!(
            r.select(&["user_spend:nope".into()]),
            Err(FeatureError::NotFound(_))
        ));
        assert!(matches!(
            r.select(&["no_colon".into()]),
            Err(FeatureError::InvalidArgument(_))
        ));
        assert!(matches!(
            r.select_service("nope"),
            Err(FeatureError::NotFound(_))
        ));
    }

    #[test]
    fn feast_registries_load_and_corrupt_ones_are_refused() {
        let spec = pb::FeatureViewSpec {
            name: "driver_stats".into(),
            project: "demo".into(),
            entities: vec!["driver".into()],
            entity_columns: vec![pb::FeatureSpecV2 {
                name: "driver_id".into(),
                value_type: ValueType::Int64 as i32,
                ..Default::default()
            }],
            features: vec![pb::FeatureSpecV2 {
                name: "conv_rate".into(),
                value_type: ValueType::Double as i32,
                ..Default::default()
            }],
            ttl: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            stream_source: Some(pb::DataSource {
                r#type: pb::data_source::SourceType::PushSource as i32,
                name: "driver_push".into(),
                batch_source: Some(Box::new(pb::DataSource {
                    timestamp_field: "event_timestamp".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            online: true,
            ..Default::default()
        };
        let reg = pb::Registry {
            entities: vec![pb::Entity {
                spec: Some(pb::EntitySpecV2 {
                    name: "driver".into(),
                    join_key: "driver_id".into(),
                    project: "demo".into(),
                    ..Default::default()
                }),
                meta: None,
            }],
            feature_views: vec![pb::FeatureView {
                spec: Some(spec.clone()),
                meta: None,
            }],
            projects: vec![pb::Project {
                spec: Some(pb::ProjectSpec {
                    name: "demo".into(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        let r = FeatureRegistry::from_feast(&reg.encode_to_vec(), None).unwrap();
        let (_, v) = r.view("driver_stats").unwrap();
        assert_eq!(v.join_keys[0].value_type, ValueType::Int64);
        assert_eq!(v.ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(v.push_source.as_deref(), Some("driver_push"));
        assert_eq!(v.timestamp_field.as_deref(), Some("event_timestamp"));
        assert!(v.unavailable.is_none());
        assert!(FeatureRegistry::from_feast(&reg.encode_to_vec(), Some("x")).is_err());
        assert!(FeatureRegistry::from_feast(b"\xff\xff\xff", None).is_err());
        // A view still materialising is kept but marked.
        let mut reg2 = reg.clone();
        reg2.feature_views[0].meta = Some(pb::FeatureViewMeta {
            state: pb::FeatureViewState::Materializing as i32,
            ..Default::default()
        });
        let r = FeatureRegistry::from_feast(&reg2.encode_to_vec(), None).unwrap();
        assert!(r.view("driver_stats").unwrap().1.unavailable.is_some());
    }
}
