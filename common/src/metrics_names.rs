//! Every metric name infermesh exports, in one place (`infermesh_` prefix, `_seconds` /
//! `_total` suffixes).

/// Inference requests, labels: model, version, protocol, outcome.
pub const INFER_REQUESTS_TOTAL: &str = "infermesh_inference_requests_total";
/// Inference request latency in seconds, labels: model, version, protocol.
pub const INFER_REQUEST_SECONDS: &str = "infermesh_inference_request_duration_seconds";
/// Rows waiting in a model's queue, label: model.
pub const QUEUE_DEPTH: &str = "infermesh_queue_depth";
/// Rows per executed batch, label: model.
pub const BATCH_SIZE: &str = "infermesh_batch_size";
/// Time a request waited in the queue before its batch ran, label: model.
pub const QUEUE_WAIT_SECONDS: &str = "infermesh_queue_wait_seconds";
/// Requests refused by admission, label: model.
pub const ADMISSION_REJECTED_TOTAL: &str = "infermesh_admission_rejected_total";
/// Model load / unload events, labels: model, version, event (loaded, unloaded, failed).
pub const MODEL_LOAD_EVENTS_TOTAL: &str = "infermesh_model_load_events_total";
/// Model versions currently ready, label: model.
pub const MODELS_READY: &str = "infermesh_model_versions_ready";
/// Gateway HTTP requests, labels: route, status.
pub const GATEWAY_REQUESTS_TOTAL: &str = "infermesh_gateway_requests_total";
/// Gateway HTTP latency in seconds, label: route.
pub const GATEWAY_REQUEST_SECONDS: &str = "infermesh_gateway_request_duration_seconds";
/// Gateway calls to upstream services that failed, labels: upstream, code.
pub const GATEWAY_UPSTREAM_ERRORS_TOTAL: &str = "infermesh_gateway_upstream_errors_total";
/// Gateway recommendation-cache lookups, label: result (hit, miss, error).
pub const GATEWAY_CACHE_REQUESTS_TOTAL: &str = "infermesh_gateway_cache_requests_total";
/// Gateway calls to its cache / store (Redis or memory) that failed or timed out, label: op
/// (connect, get, put, invalidate, recent_get, recent_push, counts_incr, counts_get).
pub const GATEWAY_CACHE_ERRORS_TOTAL: &str = "infermesh_gateway_cache_errors_total";
/// Behaviour events accepted by the gateway, label: event (view, click, purchase).
pub const GATEWAY_EVENTS_TOTAL: &str = "infermesh_gateway_events_total";
/// Items served per experiment arm (cached or not), labels: experiment, arm.
pub const AB_IMPRESSIONS_TOTAL: &str = "infermesh_ab_impressions_total";
/// Clicks on recommendations attributed to an experiment arm, labels: experiment, arm.
pub const AB_CLICKS_TOTAL: &str = "infermesh_ab_clicks_total";
/// Shadow-model calls, labels: experiment, outcome (ok, error, skipped).
pub const AB_SHADOW_REQUESTS_TOTAL: &str = "infermesh_ab_shadow_requests_total";
/// Registry syncs of models served by alias, labels: model, outcome (unchanged, swapped,
/// failed, unreachable, not_found).
pub const REGISTRY_SYNCS_TOTAL: &str = "infermesh_registry_syncs_total";
/// Whether the model registry answered the latest sync (1) or not (0), label: model.
pub const REGISTRY_REACHABLE: &str = "infermesh_registry_reachable";
/// 1 while a model served by alias may lag its registry (registry down, alias gone, or its
/// new version failed to load) and keeps serving what it has; 0 when in step. Label: model.
pub const REGISTRY_DEGRADED: &str = "infermesh_registry_degraded";
/// The registry version a model served by alias answers with, label: model.
pub const REGISTRY_SERVED_VERSION: &str = "infermesh_registry_served_version";
/// Ollama-API requests answered by `infermesh llm serve`, labels: endpoint (generate, chat,
/// embed, embeddings, show), outcome (ok, or the error kind).
pub const LLM_REQUESTS_TOTAL: &str = "infermesh_llm_requests_total";
/// Whole request time in `infermesh llm serve`, label: endpoint.
pub const LLM_REQUEST_SECONDS: &str = "infermesh_llm_request_duration_seconds";
/// From a generation request's arrival to its first token, label: endpoint (generate, chat).
pub const LLM_TIME_TO_FIRST_TOKEN_SECONDS: &str = "infermesh_llm_time_to_first_token_seconds";
/// Tokens evaluated by the embedded LLM, label: kind (prompt, generated).
pub const LLM_TOKENS_TOTAL: &str = "infermesh_llm_tokens_total";
/// Generation requests waiting for (or holding) the embedded LLM.
pub const LLM_PENDING_REQUESTS: &str = "infermesh_llm_pending_requests";
/// Time a generation request waited for the embedded LLM.
pub const LLM_QUEUE_WAIT_SECONDS: &str = "infermesh_llm_queue_wait_seconds";
/// Calls of an Ollama API (embedded or real) by the LLM client, labels: endpoint, outcome
/// (ok, unreachable, timeout, status, malformed, invalid_url).
pub const LLM_CLIENT_REQUESTS_TOTAL: &str = "infermesh_llm_client_requests_total";
/// LLM client call time, label: endpoint.
pub const LLM_CLIENT_REQUEST_SECONDS: &str = "infermesh_llm_client_request_duration_seconds";

// The sentiment family (platform `sentiment`, crate infermesh-sentiment).
/// Sentiment answers, labels: model, source (llm, classifier).
pub const SENTIMENT_ANSWERS_TOTAL: &str = "infermesh_sentiment_answers_total";
/// Texts the classifier answered although the LLM was asked or configured, labels: model,
/// reason (disabled, timeout, unavailable, malformed, overloaded, invalid_input).
pub const SENTIMENT_FALLBACKS_TOTAL: &str = "infermesh_sentiment_fallbacks_total";
/// Time of one zero-shot LLM call that answered (valid or not), label: model.
pub const SENTIMENT_LLM_SECONDS: &str = "infermesh_sentiment_llm_duration_seconds";

// The LLM side channel (`infermesh pipeline llm`, crate infermesh-pipelines).
/// LLM output-cache lookups (the cache in `infermesh_ollama::cache`), labels: result (hit,
/// miss, error; an error is served as a miss), source (jobs: the side channel's worker,
/// sentiment: the sentiment family's zero-shot arm).
pub const LLM_CACHE_REQUESTS_TOTAL: &str = "infermesh_llm_cache_requests_total";
/// LLM output-cache calls that failed (Redis down or slow), labels: op (get, put), source.
pub const LLM_CACHE_ERRORS_TOTAL: &str = "infermesh_llm_cache_errors_total";
/// LLM jobs waiting (ready or delayed for a retry) in the job queue.
pub const LLM_JOB_QUEUE_DEPTH: &str = "infermesh_llm_job_queue_depth";
/// From a job's enqueue (or its retry's due time) to a worker taking it, label: kind.
pub const LLM_JOB_QUEUE_WAIT_SECONDS: &str = "infermesh_llm_job_queue_wait_seconds";
/// LLM jobs by outcome, labels: kind, outcome (enqueued, rejected_full, ok, retried,
/// dead_letter).
pub const LLM_JOBS_TOTAL: &str = "infermesh_llm_jobs_total";
/// One attempt's run time (cache, LLM call, parsing), label: kind.
pub const LLM_JOB_SECONDS: &str = "infermesh_llm_job_duration_seconds";
/// Failed attempts, labels: kind, error (unreachable, timeout, status, malformed_answer,
/// malformed_output, invalid_input, job_timeout, sink).
pub const LLM_JOB_ERRORS_TOTAL: &str = "infermesh_llm_job_errors_total";
/// Jobs scheduled again after a failed attempt, label: kind.
pub const LLM_JOB_RETRIES_TOTAL: &str = "infermesh_llm_job_retries_total";
/// Jobs moved to the dead-letter list after their last attempt, label: kind.
pub const LLM_JOB_DEAD_LETTERS_TOTAL: &str = "infermesh_llm_job_dead_letters_total";
/// Jobs found in the processing list past their lease (a crashed or stuck worker) and queued
/// again.
pub const LLM_JOB_RECOVERED_TOTAL: &str = "infermesh_llm_job_recovered_total";
/// What the input sanitiser changed, label: action (removed_chars, neutralised_marker,
/// truncated, override_phrase).
pub const LLM_SANITISER_ACTIONS_TOTAL: &str = "infermesh_llm_sanitiser_actions_total";

// The reviews pipeline (`infermesh pipeline reviews`, crate infermesh-pipelines). Reviews per
// minute: `60 * rate(infermesh_reviews_processed_total[5m])` summed over `sentiment`; the
// sentiment distribution is the same counter by its label; top themes are
// `infermesh_reviews_topic_total` by `topic`.
/// Reviews stored for the first time (a redelivery is not counted again), label: sentiment
/// (positive, negative, neutral, other, unscored).
pub const REVIEWS_PROCESSED_TOTAL: &str = "infermesh_reviews_processed_total";
/// Reviews not processed on an attempt, label: reason (invalid: dropped; sentiment, topics,
/// database: retried; sentiment_refused, topics_refused: stored without that part;
/// live_feed, bus: counted only).
pub const REVIEWS_FAILED_TOTAL: &str = "infermesh_reviews_failed_total";
/// Reviews stored for the first time by topic, label: topic (the topic id when below 20, the
/// fitted model's largest topics; `other` above; `outlier` for -1; `unscored`).
pub const REVIEWS_TOPIC_TOTAL: &str = "infermesh_reviews_topic_total";
/// Time from taking a review off the bus to its outputs being written.
pub const REVIEWS_PROCESSING_SECONDS: &str = "infermesh_reviews_processing_seconds";
/// Reviews processed again whose row already existed (redeliveries, resubmissions).
pub const REVIEWS_DUPLICATES_TOTAL: &str = "infermesh_reviews_duplicates_total";
/// LLM theme-label jobs for newly seen topics, label: outcome (enqueued, queue_full, error).
pub const REVIEWS_THEME_JOBS_TOTAL: &str = "infermesh_reviews_theme_jobs_total";
/// Finished theme-label jobs seen by the label writer, label: outcome (written: stored in
/// `topic_labels` and the topic's reviews; skipped: not a topic this pipeline numbers, or no
/// label; failed: the job was dead-lettered, nothing to write; error: the database refused, the
/// job is retried).
pub const REVIEWS_TOPIC_LABELS_TOTAL: &str = "infermesh_reviews_topic_labels_total";
/// `POST /api/v1/reviews` answers, label: outcome (accepted, invalid, bus_full, bus_error,
/// disabled).
pub const GATEWAY_REVIEWS_TOTAL: &str = "infermesh_gateway_reviews_total";
/// Transactions taken by `POST /api/v1/transactions` (labels: outcome: `accepted`,
/// `invalid`, `disabled`, `bus_full`, `bus_error`).
pub const GATEWAY_TRANSACTIONS_TOTAL: &str = "infermesh_gateway_transactions_total";
/// Fraud alerts the gateway's feed read from fraud.alerts.
pub const GATEWAY_ALERTS_TOTAL: &str = "infermesh_gateway_alerts_total";
/// Gauge: clients connected to the alert streams (labels: transport: `sse`, `websocket`).
pub const GATEWAY_ALERT_SUBSCRIBERS: &str = "infermesh_gateway_alert_subscribers";

// The anomaly family (platform `isolation-forest`, crate infermesh-anomaly). Anomaly rate:
// `rate(...{verdict="anomaly"}) / rate(...)` summed by model.
/// Rows scored by an Isolation Forest, labels: model, verdict (anomaly, normal).
pub const ANOMALY_ROWS_TOTAL: &str = "infermesh_anomaly_rows_total";

// Monitoring (inference/monitor): the inference log and live drift.

/// Rows written to the inference log (labels: model, version).
pub const INFERENCE_LOG_ROWS_TOTAL: &str = "infermesh_inference_log_rows_total";
/// Rows the inference log dropped (labels: model, reason: `queue_full`, `write_error`).
pub const INFERENCE_LOG_DROPPED_ROWS_TOTAL: &str = "infermesh_inference_log_dropped_rows_total";
/// Parquet files the inference log wrote.
pub const INFERENCE_LOG_FILES_TOTAL: &str = "infermesh_inference_log_files_total";
/// Files deleted to keep the log directory under `--log-max-bytes`.
pub const INFERENCE_LOG_DELETED_FILES_TOTAL: &str = "infermesh_inference_log_deleted_files_total";
/// Bytes the inference log's files hold on disk.
pub const INFERENCE_LOG_BYTES: &str = "infermesh_inference_log_bytes";
/// Drift score of a column's latest live window (labels: model, version, feature, method):
/// a p-value for `ks`, `chisquare`, `z`, a distance for the others.
pub const DRIFT_SCORE: &str = "infermesh_drift_score";
/// 1 when that column drifted in the latest window (same labels).
pub const DRIFT_DETECTED: &str = "infermesh_drift_detected";
/// Share of the tested columns that drifted in the latest window (labels: model, version).
pub const DATASET_DRIFT_SHARE: &str = "infermesh_dataset_drift_share";
/// 1 when that share reached the dataset-drift share (labels: model, version).
pub const DATASET_DRIFT: &str = "infermesh_dataset_drift";
/// Rows in a version's live drift window (labels: model, version).
pub const DRIFT_WINDOW_ROWS: &str = "infermesh_drift_window_rows";
/// Live drift evaluations (labels: model, version, outcome: `ok`, `too_few_rows`, `error`).
pub const DRIFT_EVALUATIONS_TOTAL: &str = "infermesh_drift_evaluations_total";
/// Time one live drift evaluation of a version took.
pub const DRIFT_EVALUATION_SECONDS: &str = "infermesh_drift_evaluation_seconds";
/// Versions whose drift reference could not be read (labels: model, version).
pub const DRIFT_REFERENCE_ERRORS_TOTAL: &str = "infermesh_drift_reference_errors_total";

// Feature store (features/core, features/server).

/// Feature values read (labels: view, status: `present`, `not_found`, `null_value`,
/// `outside_max_age`).
pub const FEATURE_VALUES_TOTAL: &str = "infermesh_feature_values_total";
/// Age of the values read: now minus their event time (labels: view).
pub const FEATURE_AGE_SECONDS: &str = "infermesh_feature_age_seconds";
/// Time one online read of a view took, the store round trip included (labels: view).
pub const FEATURE_READ_SECONDS: &str = "infermesh_feature_read_seconds";
/// Rows written to the online store (labels: view, outcome: `written`, `skipped_older`).
pub const FEATURE_WRITES_TOTAL: &str = "infermesh_feature_writes_total";
/// Online store calls that failed (labels: store, op: `read`, `write`).
pub const FEATURE_STORE_ERRORS_TOTAL: &str = "infermesh_feature_store_errors_total";
/// Histogram: seconds a typed request waited on the feature store for its inputs (`model`).
pub const FEATURE_FILL_SECONDS: &str = "infermesh_feature_fill_seconds";
/// Counter: requests scored without the feature store's values because it failed or missed
/// its deadline (`model`, `reason`: timeout | unavailable).
pub const FEATURES_DEGRADED_TOTAL: &str = "infermesh_features_degraded_total";

// Streaming pipelines (pipelines: the Kafka bus and the runtime every pipeline runs in).

/// Messages a pipeline took from its input (labels: pipeline, topic).
pub const PIPELINE_CONSUMED_TOTAL: &str = "infermesh_pipeline_consumed_total";
/// Messages produced to a topic (labels: topic; the platform's topics by name, else `other`).
pub const PIPELINE_PRODUCED_TOTAL: &str = "infermesh_pipeline_produced_total";
/// Messages a pipeline finished (labels: pipeline, outcome: `processed`, `duplicate`,
/// `dead_lettered`, `retried`).
pub const PIPELINE_MESSAGES_TOTAL: &str = "infermesh_pipeline_messages_total";
/// Messages sent to a dead-letter topic (labels: pipeline, reason: the handler's bounded
/// reason, e.g. `malformed_json`, `missing_field`, `unknown_op`).
pub const PIPELINE_DLQ_TOTAL: &str = "infermesh_pipeline_dlq_total";
/// Histogram: seconds from taking a batch to its outputs acknowledged (labels: pipeline).
pub const PIPELINE_PROCESSING_SECONDS: &str = "infermesh_pipeline_processing_seconds";
/// Histogram: seconds from a message's broker timestamp to its outputs acknowledged
/// (labels: pipeline): the end-to-end latency the pipeline adds to its producer's.
pub const PIPELINE_END_TO_END_SECONDS: &str = "infermesh_pipeline_end_to_end_seconds";
/// Histogram: messages per batch a pipeline handled (labels: pipeline).
pub const PIPELINE_BATCH_SIZE: &str = "infermesh_pipeline_batch_size";
/// Gauge: messages a partition's group has yet to read (labels: group, topic, partition),
/// from librdkafka's statistics every 5 s.
pub const PIPELINE_CONSUMER_LAG: &str = "infermesh_pipeline_consumer_lag";
/// Gauge: partitions the group assigned to this process (labels: group).
pub const PIPELINE_ASSIGNED_PARTITIONS: &str = "infermesh_pipeline_assigned_partitions";
/// Errors librdkafka reported on a consumer's queue and recovers from by itself (a broker
/// down, a connection reset); a fatal error ends the pipeline instead.
pub const PIPELINE_CONSUMER_ERRORS_TOTAL: &str = "infermesh_pipeline_consumer_errors_total";
/// Gauge: deliveries taken and not yet acknowledged (labels: pipeline).
pub const PIPELINE_IN_FLIGHT: &str = "infermesh_pipeline_in_flight";
/// Behaviour pipeline: events applied (labels: event: `view`, `click`, `purchase`).
pub const BEHAVIOR_EVENTS_TOTAL: &str = "infermesh_behavior_events_total";
/// Behaviour pipeline: session_product_views writes the feature store refused.
pub const BEHAVIOR_FEATURE_WRITE_ERRORS_TOTAL: &str =
    "infermesh_behavior_feature_write_errors_total";
/// Resumes pipeline: resumes scored, written and produced to resume.scored.
pub const RESUMES_SCORED_TOTAL: &str = "infermesh_resumes_scored_total";
/// CDC: change events produced (labels: table, the one streamed; op: `c`, `u`, `d`).
pub const CDC_CHANGES_TOTAL: &str = "infermesh_cdc_changes_total";
/// CDC, histogram: seconds from a transaction's commit arriving to its change events
/// acknowledged by the broker.
pub const CDC_PRODUCE_SECONDS: &str = "infermesh_cdc_produce_seconds";
/// CDC, gauge: seconds between the last produced transaction's commit in PostgreSQL and its
/// events acknowledged.
pub const CDC_REPLICATION_LAG_SECONDS: &str = "infermesh_cdc_replication_lag_seconds";
/// CDC, gauge: the LSN last confirmed to the replication slot.
pub const CDC_CONFIRMED_LSN: &str = "infermesh_cdc_confirmed_lsn";
/// Fraud pipeline: alerts produced (labels: source: `model`, `rules`, `both`).
pub const FRAUD_ALERTS_TOTAL: &str = "infermesh_fraud_alerts_total";
/// Fraud pipeline: transactions scored (labels: mode: `in_process`, `grpc`; degraded:
/// `true` when stream or store features were missing).
pub const FRAUD_SCORED_TOTAL: &str = "infermesh_fraud_scored_total";
/// Fraud pipeline: email jobs for the Celery workers (labels: outcome: `queued`, `failed`,
/// `dropped_full`).
pub const FRAUD_EMAIL_JOBS_TOTAL: &str = "infermesh_fraud_email_jobs_total";
/// Fraud pipeline: rule hits (labels: rule).
pub const FRAUD_RULE_HITS_TOTAL: &str = "infermesh_fraud_rule_hits_total";
/// Fraud pipeline: events later than the window's allowed lateness, scored but left out of the
/// sliding window.
pub const FRAUD_LATE_EVENTS_TOTAL: &str = "infermesh_fraud_late_events_total";
