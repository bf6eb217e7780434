"""Writes the Grafana dashboards under deploy/grafana/dashboards/ (provisioned by file, see
deploy/grafana/provisioning/). Run from the repository root: `python3 tools/gen_dashboards.py`;
`--check` exits 1 when a committed dashboard differs from what this script writes (the README
test command runs it, so the JSON and this source never drift apart).

Every panel's PromQL is evaluated against a real Prometheus scraping a running `infermesh up`
by tests/prometheus/test_live.py: a query naming a metric nobody exports fails that test.
Metric names: common/src/metrics_names.rs. Python standard library only.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "deploy" / "grafana" / "dashboards"

DS = {"type": "prometheus", "uid": "${datasource}"}
M = 'model=~"$model"'
RI = "$__rate_interval"


def sel(metric, labels=""):
    """`metric{labels}`, or the bare name without labels."""
    return f"{metric}{{{labels}}}" if labels else metric


def rate(metric, by, labels="", scale=""):
    """`sum by (by) (rate(metric{labels}[$__rate_interval]))`, optionally scaled."""
    r = f"rate({sel(metric, labels)}[{RI}])"
    inner = f"sum by ({by}) ({r})" if by else f"sum({r})"
    return f"{scale}{inner}"


def quantile(q, metric, by, labels=""):
    """The q-quantile of a histogram's buckets, by `by`."""
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({sel(metric + '_bucket', labels)}[{RI}])))"


def ratio(metric, hit, by, labels=""):
    """Share of a counter's rate whose labels also match `hit`."""
    both = f"{labels},{hit}" if labels else hit
    return f"{rate(metric, by, both)} / {rate(metric, by, labels)}"


def panel(title, targets, unit="short", kind="timeseries", desc="", w=12, h=8, instant=False,
          options=None, field=None):
    """A panel; `targets` is a list of (expr, legend)."""
    defaults = {"unit": unit}
    defaults.update(field or {})
    p = {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"h": h, "w": w},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DS,
                "expr": expr,
                "legendFormat": legend,
                "range": not instant,
                "instant": instant,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    return p


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24},
            "panels": []}


def variable_model(metric):
    return {
        "name": "model",
        "label": "model",
        "type": "query",
        "datasource": DS,
        "query": {"query": f"label_values({metric}, model)", "refId": "model"},
        "definition": f"label_values({metric}, model)",
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".+",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def variable_datasource():
    return {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {"text": "Prometheus", "value": "prometheus"},
    }


def dashboard(uid, title, desc, panels, variables):
    # Grafana places panels by gridPos: rows full width, two panels per line.
    x = y = 0
    line_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        g = p["gridPos"]
        if p["type"] == "row" or x + g["w"] > 24:
            y += line_h
            x, line_h = 0, 0
        g["x"], g["y"] = x, y
        x += g["w"]
        line_h = max(line_h, g["h"])
        if p["type"] == "row":
            y += g["h"]
            x = line_h = 0
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["infermesh"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "timezone": "utc",
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "graphTooltip": 1,
        "templating": {"list": [variable_datasource()] + variables},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["infermesh"], "title": "infermesh", "asDropdown": True}],
        "panels": panels,
    }


def serving():
    req = "infermesh_inference_requests_total"
    return dashboard(
        "infermesh-serving",
        "infermesh / Serving",
        "Inference servers (infermesh serve, up) and the gateway: traffic, errors, latency, "
        "queues, admission and batching per model; gateway routes and its recommendation cache.",
        [
            row("Inference"),
            panel("Requests per second", [(rate(req, "model, outcome", M), "{{model}} {{outcome}}")],
                  unit="reqps", desc="KServe V2 (REST, gRPC) and typed gRPC requests by outcome."),
            panel("Error ratio", [(f"model:infermesh_inference_errors:ratio5m{{{M}}}", "{{model}}")],
                  unit="percentunit",
                  desc="Share of requests that did not end ok over 5 minutes (recording rule)."),
            panel("Latency p50 and p99", [
                (quantile(0.5, "infermesh_inference_request_duration_seconds", "model", M), "{{model}} p50"),
                (quantile(0.99, "infermesh_inference_request_duration_seconds", "model", M), "{{model}} p99"),
            ], unit="s"),
            panel("Queue wait p99", [
                (quantile(0.99, "infermesh_queue_wait_seconds", "model", M), "{{model}}")], unit="s",
                desc="Time a request waited in its model's queue before its batch ran."),
            panel("Queue depth", [(f"sum by (model) (infermesh_queue_depth{{{M}}})", "{{model}}")],
                  unit="short", desc="Rows waiting in each model's queue."),
            panel("Admission rejections per second",
                  [(rate("infermesh_admission_rejected_total", "model", M), "{{model}}")],
                  unit="reqps", desc="Requests refused early because the model's queue was full "
                                     "(RESOURCE_EXHAUSTED / 429)."),
            panel("Mean batch size", [(
                f"sum by (model) (rate(infermesh_batch_size_sum{{{M}}}[{RI}])) / "
                f"sum by (model) (rate(infermesh_batch_size_count{{{M}}}[{RI}]))", "{{model}}")],
                unit="short", desc="Rows per executed batch."),
            panel("Versions ready", [(f"max by (model) (infermesh_model_versions_ready{{{M}}})", "{{model}}")],
                  kind="stat", unit="short", desc="0: the model cannot serve (alert InfermeshModelNotReady)."),
            row("Gateway"),
            panel("Gateway requests per second",
                  [(rate("infermesh_gateway_requests_total", "route, status"), "{{route}} {{status}}")],
                  unit="reqps"),
            panel("Gateway latency p99",
                  [(quantile(0.99, "infermesh_gateway_request_duration_seconds", "route"), "{{route}}")],
                  unit="s"),
            panel("Recommendation cache hit rate",
                  [(ratio("infermesh_gateway_cache_requests_total", 'result="hit"', ""), "hit rate")],
                  unit="percentunit", desc="Recommendation lists answered from the cache."),
            panel("Behaviour events per second",
                  [(rate("infermesh_gateway_events_total", "event"), "{{event}}")], unit="reqps",
                  desc="Tracker events accepted by POST /api/v1/events."),
        ],
        [variable_model("infermesh_inference_requests_total")],
    )


def models():
    return dashboard(
        "infermesh-models",
        "infermesh / Drift and anomalies",
        "Live drift of each model version against its drift_reference.parquet (Evidently's "
        "DataDriftPreset tests), the Isolation Forest models' anomaly rate, and the inference log.",
        [
            row("Live drift"),
            panel("Dataset drift share",
                  [(f"max by (model, version) (infermesh_dataset_drift_share{{{M}}})", "{{model}} v{{version}}")],
                  unit="percentunit", field={"max": 1, "min": 0},
                  desc="Share of the tested columns that drifted in the latest window; dataset "
                       "drift at 0.5 (Evidently's drift_share)."),
            panel("Dataset drift", [(f"max by (model, version) (infermesh_dataset_drift{{{M}}})", "{{model}} v{{version}}")],
                  kind="stat", unit="short",
                  field={"mappings": [{"type": "value", "options": {
                      "0": {"text": "no drift", "color": "green"},
                      "1": {"text": "drift", "color": "red"}}}]}),
            panel("Drift score per column", [(f"infermesh_drift_score{{{M}}}",
                                              "{{model}} v{{version}} {{feature}} ({{method}})")],
                  kind="table", unit="short", instant=True, w=24,
                  desc="A p-value for ks, chisquare and z (drift below 0.05), a distance for "
                       "wasserstein, jensenshannon and psi (drift above 0.1)."),
            panel("Drifted columns",
                  [(f"sum by (model, version) (infermesh_drift_detected{{{M}}})", "{{model}} v{{version}}")],
                  unit="short"),
            panel("Rows in the live window",
                  [(f"max by (model, version) (infermesh_drift_window_rows{{{M}}})", "{{model}} v{{version}}")],
                  unit="short"),
            panel("Drift evaluations per minute",
                  [(rate("infermesh_drift_evaluations_total", "model, outcome", M, scale="60 * "),
                    "{{model}} {{outcome}}")], unit="short"),
            panel("Drift evaluation time p99",
                  [(quantile(0.99, "infermesh_drift_evaluation_seconds", ""), "p99")], unit="s"),
            row("Anomalies"),
            panel("Anomaly rate",
                  [(ratio("infermesh_anomaly_rows_total", 'verdict="anomaly"', "model", M), "{{model}}")],
                  unit="percentunit",
                  desc="Share of the rows an Isolation Forest flagged (decision_function < 0); "
                       "about the contamination it was fitted with when nothing changed."),
            panel("Rows scored per second",
                  [(rate("infermesh_anomaly_rows_total", "model, verdict", M), "{{model}} {{verdict}}")],
                  unit="short"),
            row("Inference log"),
            panel("Logged rows per second",
                  [(rate("infermesh_inference_log_rows_total", "model", M), "{{model}}")], unit="short"),
            panel("Dropped rows per second",
                  [(rate("infermesh_inference_log_dropped_rows_total", "model, reason", M), "{{model}} {{reason}}")],
                  unit="short", desc="Rows the log could not keep (queue full, write errors)."),
            panel("Log size on disk", [("max(infermesh_inference_log_bytes)", "bytes")], unit="bytes"),
        ],
        [variable_model("infermesh_inference_requests_total")],
    )


def reviews_llm():
    processed = "infermesh_reviews_processed_total"
    return dashboard(
        "infermesh-reviews-llm",
        "infermesh / Reviews and LLM",
        "The reviews pipeline (sentiment, topics, themes) and the embedded LLM (Ollama API, "
        "side-channel jobs, output cache).",
        [
            row("Reviews"),
            panel("Reviews per minute", [(rate(processed, "", scale="60 * "), "reviews/min")], unit="short"),
            panel("Sentiment distribution",
                  [(f"sum by (sentiment) (increase({processed}[$__range]))", "{{sentiment}}")],
                  kind="piechart", unit="short", instant=True,
                  options={"reduceOptions": {"calcs": ["lastNotNull"]}, "pieType": "donut"}),
            panel("Top themes",
                  [("topk(10, sum by (topic) (increase(infermesh_reviews_topic_total[$__range])))", "{{topic}}")],
                  kind="bargauge", unit="short", instant=True,
                  options={"orientation": "horizontal", "reduceOptions": {"calcs": ["lastNotNull"]}},
                  desc="Reviews per topic (the fitted model's largest topics; other, outlier)."),
            panel("Review failures per second",
                  [(rate("infermesh_reviews_failed_total", "reason"), "{{reason}}")], unit="short",
                  desc="invalid: dropped; sentiment, topics, database: retried; *_refused: stored "
                       "without that part."),
            panel("Review processing time p99",
                  [(quantile(0.99, "infermesh_reviews_processing_seconds", ""), "p99")], unit="s"),
            panel("Sentiment answers per second",
                  [(rate("infermesh_sentiment_answers_total", "model, source"), "{{model}} {{source}}")],
                  unit="short", desc="Answered by the LLM (zero-shot) or the classifier."),
            row("LLM"),
            panel("LLM queue wait p99",
                  [(quantile(0.99, "infermesh_llm_queue_wait_seconds", ""), "p99")], unit="s",
                  desc="Time a generation request waited for the embedded LLM."),
            panel("LLM tokens per second",
                  [(rate("infermesh_llm_tokens_total", "kind"), "{{kind}}")], unit="short"),
            panel("LLM time to first token p99",
                  [(quantile(0.99, "infermesh_llm_time_to_first_token_seconds", "endpoint"), "{{endpoint}}")],
                  unit="s"),
            panel("LLM requests waiting", [("max(infermesh_llm_pending_requests)", "pending")], unit="short"),
            panel("LLM output cache hit rate",
                  [(ratio("infermesh_llm_cache_requests_total", 'result="hit"', "source"), "{{source}}")],
                  unit="percentunit", desc="SHA-256-keyed output cache (jobs: the side channel; "
                                           "sentiment: the zero-shot arm)."),
            panel("LLM jobs per minute",
                  [(rate("infermesh_llm_jobs_total", "kind, outcome", scale="60 * "), "{{kind}} {{outcome}}")],
                  unit="short"),
            panel("LLM job queue depth", [("max(infermesh_llm_job_queue_depth)", "jobs")], unit="short"),
        ],
        [],
    )


def features():
    values = "infermesh_feature_values_total"
    return dashboard(
        "infermesh-features",
        "infermesh / Feature store",
        "The Feast-compatible feature store: reads by status, latency and staleness per feature "
        "view, writes, and the models' store-filled inputs.",
        [
            row("Reads"),
            panel("Feature values read per second",
                  [(rate(values, "view, status"), "{{view}} {{status}}")], unit="short",
                  desc="present; not_found (no row for the entity); null_value; outside_max_age "
                       "(older than the view's ttl)."),
            panel("Hit rate", [(ratio(values, 'status="present"', "view"), "{{view}}")],
                  unit="percentunit", desc="Share of values read that were present and fresh."),
            panel("Store read latency p99",
                  [(quantile(0.99, "infermesh_feature_read_seconds", "view"), "{{view}}")], unit="s",
                  desc="One pipelined store round trip per request and view."),
            panel("Value age p50 (staleness)",
                  [(quantile(0.5, "infermesh_feature_age_seconds", "view"), "{{view}}")], unit="s",
                  desc="Now minus the event time of the values read."),
            row("Writes and models"),
            panel("Rows written per second",
                  [(rate("infermesh_feature_writes_total", "view, outcome"), "{{view}} {{outcome}}")],
                  unit="short", desc="written, or skipped_older (not newer than the stored row)."),
            panel("Store errors per second",
                  [(rate("infermesh_feature_store_errors_total", "store, op"), "{{store}} {{op}}")],
                  unit="short", desc="Failed store calls (Redis down or past its timeout)."),
            panel("Model input fill wait p99",
                  [(quantile(0.99, "infermesh_feature_fill_seconds", "model", M), "{{model}}")], unit="s",
                  desc="Time a typed request waited on the store for inputs it left out (deadline "
                       "--feature-timeout-ms, 5 ms by default)."),
            panel("Degraded requests per second",
                  [(rate("infermesh_features_degraded_total", "model, reason", M), "{{model}} {{reason}}")],
                  unit="short", desc="Scored without the store's values: the store failed or missed the "
                                     "deadline (features_degraded in the response)."),
        ],
        [variable_model("infermesh_feature_fill_seconds_count")],
    )


def streaming():
    pipe = "infermesh_pipeline_"
    return dashboard(
        "infermesh-streaming",
        "infermesh / Streaming",
        "The Kafka pipelines: throughput, lag, dead letters and latency per pipeline; the fraud "
        "pipeline's alerts, rules and degraded scores; the gateway's live alert streams.",
        [
            row("Throughput and lag"),
            panel("Messages consumed per second",
                  [(rate(pipe + "consumed_total", "pipeline, topic"), "{{pipeline}} {{topic}}")],
                  unit="short", desc="Taken from the input topic (duplicates included)."),
            panel("Messages produced per second",
                  [(rate(pipe + "produced_total", "topic"), "{{topic}}")], unit="short",
                  desc="Acknowledged by the broker, per topic (dead-letter topics included)."),
            panel("Consumer lag",
                  [(f"sum by (group, topic) ({pipe}consumer_lag)", "{{group}} {{topic}}")], unit="short",
                  desc="Messages the group has yet to read, summed over partitions (librdkafka "
                       "statistics every 5 s; the in-process bus's queue in infermesh up)."),
            panel("Outcomes per second",
                  [(rate(pipe + "messages_total", "pipeline, outcome"), "{{pipeline}} {{outcome}}")],
                  unit="short", desc="processed, duplicate (inside the dedupe window), dead_lettered, "
                                     "retried (a dependency failed; handed back after a back-off)."),
            row("Latency and dead letters"),
            panel("End-to-end latency p50 / p99",
                  [(quantile(0.5, pipe + "end_to_end_seconds", "pipeline"), "p50 {{pipeline}}"),
                   (quantile(0.99, pipe + "end_to_end_seconds", "pipeline"), "p99 {{pipeline}}")],
                  unit="s", desc="From the message's broker timestamp to its outputs acknowledged."),
            panel("Batch processing p99",
                  [(quantile(0.99, pipe + "processing_seconds", "pipeline"), "{{pipeline}}")], unit="s",
                  desc="One batch: dedupe check, stream state, scoring, outputs, acks."),
            panel("Dead letters per second",
                  [(rate(pipe + "dlq_total", "pipeline, reason"), "{{pipeline}} {{reason}}")],
                  unit="short", desc="Poison messages sent to <topic>.dlq with the reason in headers."),
            panel("Batch size p50",
                  [(quantile(0.5, pipe + "batch_size", "pipeline"), "{{pipeline}}")], unit="short",
                  desc="Messages handled together (larger under load)."),
            row("Fraud"),
            panel("Alerts per second",
                  [(rate("infermesh_fraud_alerts_total", "source"), "{{source}}")], unit="short",
                  desc="model (probability over the threshold), rules (the sliding window), both."),
            panel("Transactions scored per second",
                  [(rate("infermesh_fraud_scored_total", "mode, degraded"), "{{mode}} degraded={{degraded}}")],
                  unit="short", desc="degraded=true: Redis or the feature store failed; scored on defaults."),
            panel("Velocity rule hits per second",
                  [(rate("infermesh_fraud_rule_hits_total", "rule"), "{{rule}}")], unit="short",
                  desc="Transactions completing 5 or more of one user within 60 s."),
            panel("Alert stream subscribers",
                  [("sum by (transport) (infermesh_gateway_alert_subscribers)", "{{transport}}")],
                  unit="short", desc="Clients on /api/v1/fraud/alerts/stream (SSE) and /ws."),
        ],
        [],
    )


DASHBOARDS = {
    "infermesh-serving.json": serving,
    "infermesh-models.json": models,
    "infermesh-reviews-llm.json": reviews_llm,
    "infermesh-features.json": features,
    "infermesh-streaming.json": streaming,
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2) + "\n"
        path = OUT / name
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run python3 tools/gen_dashboards.py): {', '.join(stale)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
