//! The server's models without its ports: a model repository opened, polled for new versions
//! (the same hot reload as `infermesh serve`) and scored in process, for jobs that embed the
//! engine (the streaming pipelines score transactions this way unless given a server's URL).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use infermesh_inference::{ManagerConfig, ModelManager};
use tokio::task::JoinHandle;

use crate::{AppState, ServeError, families};

/// What to open.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The model repository.
    pub model_repository: PathBuf,
    /// How often to rescan it; `None`: never.
    pub poll_interval: Option<Duration>,
    /// The FraudScoring model when a request names none.
    pub fraud_model: String,
    /// The feature store typed requests' missing inputs are read from, if any.
    pub features: Option<Arc<crate::features::FeatureSource>>,
}

/// A repository's models, loaded and kept current in this process.
#[derive(Debug)]
pub struct LocalModels {
    state: AppState,
    poller: Option<JoinHandle<()>>,
}

impl LocalModels {
    /// Loads every model of the repository (a model that fails to load is logged and left
    /// out, as the server does) and starts polling it.
    pub async fn open(cfg: LocalConfig) -> Result<Self, ServeError> {
        let families = families::compiled().map_err(ServeError::Config)?;
        let repository = cfg.model_repository.clone();
        let manager = tokio::task::spawn_blocking(move || {
            ModelManager::open(ManagerConfig {
                repository,
                poll_interval: None,
                families,
                monitor: None,
            })
        })
        .await
        .map_err(|e| ServeError::Serve(e.to_string()))??;
        let poller = cfg.poll_interval.map(|i| manager.spawn_poller(i));
        let mut me = Self::shared(manager, cfg.fraud_model, cfg.features);
        me.poller = poller;
        Ok(me)
    }

    /// The models a running server already holds (`infermesh up` scores its pipeline's
    /// transactions on its server's models): no second load, the server's poller keeps them
    /// current.
    pub fn shared(
        manager: Arc<ModelManager>,
        fraud_model: String,
        features: Option<Arc<crate::features::FeatureSource>>,
    ) -> Self {
        Self {
            state: AppState {
                manager,
                max_request_bytes: usize::MAX,
                default_fraud_model: fraud_model,
                default_embedding_model: String::new(),
                default_categorizer_model: String::new(),
                default_recommender_model: String::new(),
                model_control: false,
                features,
            },
            poller: None,
        }
    }

    /// The shared state the typed services run on.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The typed FraudScoring service over these models, called directly (no network).
    #[cfg(feature = "trees")]
    pub fn fraud(&self) -> crate::fraud::FraudService {
        crate::fraud::FraudService::new(self.state.clone())
    }
}

impl Drop for LocalModels {
    fn drop(&mut self) {
        if let Some(p) = self.poller.take() {
            p.abort();
        }
    }
}
