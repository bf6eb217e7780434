"""The dashboards and rules against a real Prometheus scraping a running `infermesh up`.

`infermesh up` (INFERMESH_BIN) runs with the real model cache (all-MiniLM-L6-v2, SmolLM2), the
reviews pipeline on PostgreSQL (INFERMESH_TEST_DATABASE_URL), the inference log and live drift
on short intervals, and one extra model, `fraud-broken`, whose drift reference is not Parquet.
A little load goes through every product path (V2 inference on the fraud and anomaly models,
the gateway's fraud, recommendation, event and review routes, an Ollama generate call), while
Debian's `prometheus` scrapes the process every second with deploy/prometheus/rules/ loaded and
Debian's Alertmanager runs deploy/alertmanager/alertmanager.yml (its webhook URLs pointed at a
receiver in this test, its group_wait shortened; routes and matchers as committed). Then:

- every PromQL expression of every panel of deploy/grafana/dashboards/*.json, Grafana's
  variables substituted (`$model` by its All value `.+`, `$__rate_interval` by 1m, `$__range`
  by 10m), is evaluated through Prometheus's HTTP API and must return series: a panel whose
  query names a metric nobody exports fails here;
- every rule loaded by Prometheus must evaluate without error and return series: a recording
  rule its own name, an alert its expression without the trailing threshold comparison (the
  signal it compares; the comparison itself is tested by promtool test rules);
- every alert has an expected receiver in deploy/alertmanager/tests/routes.txt;
- the broken reference fires InfermeshDriftReferenceUnreadable in Prometheus, and Alertmanager
  routes it to the data-science receiver's webhook.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("INFERMESH_BIN", str(ROOT / "target" / "debug" / "infermesh"))
CACHE = Path(os.environ.get("INFERMESH_MODEL_CACHE", Path.home() / ".cache" / "infermesh" / "models"))
DATABASE = os.environ.get("INFERMESH_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# Training the sample review models and loading MiniLM twice take minutes in a debug build.
START_TIMEOUT_S = 600
VARIABLES = {"$__rate_interval": "1m", "$__range": "10m", "$model": ".+"}

FRAUD_ROW = [912.5, 3, 1, 0.41, 0.35, 48.0, 19.0, 4, 9, 240, 1, 0, 21, 2, 6, 1]
SCORE_REQUEST = {
    "transaction_id": "tx-live-1",
    "features": {"amount": 912.5, "hour_of_day": 3, "is_night": 1, "merchant_risk": 0.41,
                 "device_risk_score": 0.35, "user_avg_spend": 48.0, "amount_to_avg_ratio": 19.0,
                 "txn_count_1h": 4, "txn_count_24h": 9, "distance_from_home_km": 240,
                 "is_foreign": 1, "card_present": 0, "account_age_days": 21,
                 "failed_logins_24h": 2, "new_device": 1},
    "top_k": 3,
}
REVIEWS = [
    "The battery died after two hours, very disappointing.",
    "Delivery was quick and the parcel arrived in perfect shape.",
    "Battery life is terrible, it barely lasts a morning.",
    "Fast shipping, the box arrived early and well packed.",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, body=None, method=None, timeout=60):
    """(status, parsed JSON or text) of one HTTP call."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        # Not listening (yet): the callers that poll try again.
        return 0, str(e)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_for(what, check, timeout, proc=None, log=None):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited ({proc.returncode}); log:\n{log.read_text()[-8000:] if log else ''}")
        if time.time() > deadline:
            pytest.fail(f"{what}: not within {timeout} s" + (f"; log:\n{log.read_text()[-8000:]}" if log else ""))
        time.sleep(0.5)


class Process:
    """A child process, stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, args, log, **kw):
        self.log = log
        with open(log, "w") as f:
            self.proc = subprocess.Popen(args, stderr=f, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_broken_model(repo):
    """`fraud-broken`: the sample fraud model with a drift reference that is not Parquet."""
    src = ROOT / "deploy" / "sample-repository" / "fraud"
    dst = repo / "fraud-broken"
    (dst / "1").mkdir(parents=True)
    shutil.copy(src / "1" / "model.json", dst / "1" / "model.json")
    (dst / "1" / "drift_reference.parquet").write_bytes(b"PAR1 this is not a parquet file")
    shutil.copy(src / "config.toml", dst / "config.toml")


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    for need in ("all-MiniLM-L6-v2/model.safetensors", "smollm2-135m-instruct/model.gguf"):
        assert (CACHE / need).is_file(), f"{CACHE / need} missing: run scripts/test.sh (it fetches it once)"
    tmp = tmp_path_factory.mktemp("up")
    repo = tmp / "model-repository"
    repo.mkdir()
    write_broken_model(repo)
    log = tmp / "up.log"
    p = Process([BIN, "up", "--log-json", "--model-repository", str(repo), "--model-cache", str(CACHE),
                 "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                 "--gateway-port", "0", "--gateway-metrics-port", "0", "--llm-port", "0", "--features-port", "0",
                 "--poll-interval", "0", "--database-url", DATABASE,
                 "--drift-interval", "1", "--drift-min-rows", "20",
                 "--log-dir", str(tmp / "inference-log"), "--log-sample-rate", "1", "--log-flush-rows", "10"],
                log, stdout=subprocess.PIPE, text=True)
    lines = []

    def read():
        for line in p.proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_for("the banner of infermesh up", lambda: any(l.startswith("Ctrl-C") for l in lines),
                 START_TIMEOUT_S, p.proc, log)
        text = "".join(lines)
        m = re.search(r"^infermesh up: inference http (\S+) grpc \S+ metrics (\S+) \| gateway http (\S+)", text, re.M)
        llm = re.search(r"^embedded LLM \(Ollama API, [^)]*\): http (\S+)", text, re.M)
        assert m and llm, text
        addrs = {"http": m.group(1), "metrics": m.group(2), "gateway": m.group(3), "llm": llm.group(1)}
        for model in ("fraud", "fraud-broken", "anomaly", "sentiment", "topics", "recs"):
            wait_for(f"{model} ready", lambda: call(f"http://{addrs['http']}/v2/models/{model}/ready")[0] == 200,
                     START_TIMEOUT_S, p.proc, log)
        wait_for("the gateway ready", lambda: call(f"http://{addrs['gateway']}/readyz")[0] == 200, 60, p.proc, log)
        yield addrs
    finally:
        p.stop()


class Webhook(BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Webhook.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "Alertmanager is not installed: run scripts/test.sh (it installs Debian's prometheus-alertmanager)"
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    tmp = tmp_path_factory.mktemp("alertmanager")
    config = (ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text()
    assert "http://127.0.0.1:9095/" in config and "group_wait: 30s" in config
    config = config.replace("http://127.0.0.1:9095/", f"http://127.0.0.1:{hook.server_address[1]}/")
    config = config.replace("group_wait: 30s", "group_wait: 1s")
    (tmp / "alertmanager.yml").write_text(config)
    port = free_port()
    p = Process([binary, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], tmp / "alertmanager.log")
    try:
        wait_for("Alertmanager ready", lambda: call(f"http://127.0.0.1:{port}/-/ready")[0] == 200, 60, p.proc, p.log)
        yield f"127.0.0.1:{port}"
    finally:
        p.stop()
        hook.shutdown()


@pytest.fixture(scope="module")
def prometheus(up, alertmanager, tmp_path_factory):
    assert shutil.which("prometheus"), "Prometheus is not installed: run scripts/test.sh (Debian's prometheus)"
    tmp = tmp_path_factory.mktemp("prometheus")
    rules = sorted(str(p) for p in (ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rules,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": "infermesh-up", "static_configs": [{"targets": [up["metrics"]]}]}],
    }
    # JSON is YAML.
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    p = Process(["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"], tmp / "prometheus.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("Prometheus ready", lambda: call(f"{base}/-/ready")[0] == 200, 120, p.proc, p.log)

        def scraped():
            _, v = call(f"{base}/api/v1/targets")
            targets = v["data"]["activeTargets"] if isinstance(v, dict) else []
            return targets and all(t["health"] == "up" for t in targets)

        wait_for("infermesh up scraped", scraped, 60, p.proc, p.log)
        yield base
    finally:
        p.stop()


def query(base, expr):
    _, v = call(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert isinstance(v, dict) and v.get("status") == "success", f"{expr}: {v}"
    return v["data"]["result"]


def substitute(expr):
    for k, v in VARIABLES.items():
        expr = expr.replace(k, v)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def panel_exprs():
    out = []
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        for p in d["panels"]:
            for t in p.get("targets", []):
                out.append((f"{path.name}: {p['title']}", t["expr"]))
    return out


def load(addrs):
    """A little traffic through every path the dashboards watch."""
    http, gw, llm = addrs["http"], addrs["gateway"], addrs["llm"]
    for i in range(8):
        rows = [[x * (1 + 0.05 * ((i + j) % 5)) for x in FRAUD_ROW] for j in range(10)]
        s, v = call(f"http://{http}/v2/models/fraud/infer",
                    {"inputs": [{"name": "input__0", "shape": [10, 16], "datatype": "FP32", "data": rows}]})
        assert s == 200, v
        rows = [[40.0 + 5 * j, 1.0 + 0.1 * j, 9 + j % 12, 3 + j % 4, 2.0 + j] for j in range(10)] + \
               [[2400.0, 38.0, 3, 19, 900.0]]
        s, v = call(f"http://{http}/v2/models/anomaly/infer",
                    {"inputs": [{"name": "input__0", "shape": [11, 5], "datatype": "FP32", "data": rows}]})
        assert s == 200, v
        assert v["outputs"][1]["data"][-1] is True, v
    s, v = call(f"http://{http}/v2/models/fraud-broken/infer",
                {"inputs": [{"name": "input__0", "shape": [1, 16], "datatype": "FP32", "data": [FRAUD_ROW]}]})
    assert s == 200, v
    s, v = call(f"http://{gw}/api/v1/fraud/score", SCORE_REQUEST)
    assert s == 200, v
    # user_avg_spend and device_risk_score left to the in-memory feature store `up` seeds
    # (u7: 20 + 7*37 % 180 + 0.5; dev-3: 3*13 % 20 / 20).
    store_request = {k: v for k, v in SCORE_REQUEST.items() if k != "features"}
    store_request["features"] = {k: x for k, x in SCORE_REQUEST["features"].items()
                                 if k not in ("user_avg_spend", "device_risk_score")}
    store_request.update(user_id="u7", device_id="dev-3", top_k=16)
    s, v = call(f"http://{gw}/api/v1/fraud/score", store_request)
    assert s == 200 and v["features_degraded"] is False, v
    filled = {r["feature"]: r["value"] for r in v["reasons"]}
    # The model's inputs are f32: 0.95 comes back as 0.949999988.
    assert filled["user_avg_spend"] == 99.5 and abs(filled["device_risk_score"] - 0.95) < 1e-6, v
    for _ in range(2):
        s, v = call(f"http://{gw}/api/v1/recommendations/u1")
        assert s == 200, v
    s, v = call(f"http://{gw}/api/v1/events", {"event": "view", "user_id": "u1", "product_id": "p5"})
    assert s in (200, 202), v
    stamp = time.time_ns()
    # Transactions through the gateway to the in-process fraud pipeline: a burst of one user
    # (the sliding-window rule), a risky one (the model), one without an amount (dead-lettered);
    # an SSE client is connected while the alerts come.
    sse = urllib.request.urlopen(f"http://{gw}/api/v1/fraud/alerts/stream?last_event_id=", timeout=60)
    base_ms = 1_796_652_000_000
    for i in range(6):
        s, v = call(f"http://{gw}/api/v1/transactions",
                    {"transaction_id": f"live-{stamp}-{i}", "user_id": f"burst-{stamp}", "amount": 30.0,
                     "created_at": base_ms + i * 5_000})
        assert s == 202, v
    s, v = call(f"http://{gw}/api/v1/transactions",
                {"transaction_id": f"live-{stamp}-risky", "user_id": "u7", "device_id": "dev-3", "amount": 912.5,
                 "created_at": "2026-12-07T03:00:00Z", "merchant_risk": 0.41, "distance_from_home_km": 240,
                 "is_foreign": 1, "card_present": 0, "account_age_days": 21, "failed_logins_24h": 2,
                 "new_device": 1})
    assert s == 202, v
    s, v = call(f"http://{gw}/api/v1/transactions",
                {"transaction_id": f"live-{stamp}-poison", "user_id": "u8", "created_at": base_ms})
    assert s == 202, v
    seen = 0
    while seen < 3:
        line = sse.readline().decode()
        seen += line.startswith("event: alert")
    sse.close()
    for i, text in enumerate(REVIEWS):
        s, v = call(f"http://{gw}/api/v1/reviews",
                    {"review_id": f"live-{stamp}-{i}", "product_id": "p1", "rating": 1 + 4 * (i % 2), "text": text})
        assert s == 202, v
    s, v = call(f"http://{llm}/api/generate",
                {"model": "smollm2:135m", "prompt": "Say hello.", "stream": False, "options": {"num_predict": 8}},
                timeout=300)
    assert s == 200, v


def test_every_panel_and_rule_returns_series(up, prometheus):
    load(up)
    base = prometheus

    def has(metric):
        return lambda: bool(query(base, metric))

    # What the load sets off asynchronously: the reviews pipeline, the LLM side channel, the
    # drift evaluator (every second) and the log writer.
    for metric in ("infermesh_reviews_processed_total", "infermesh_llm_jobs_total", "infermesh_pipeline_dlq_total",
                   'infermesh_dataset_drift_share{model="anomaly"}', 'infermesh_dataset_drift_share{model="fraud"}',
                   "infermesh_inference_log_rows_total", "infermesh_llm_tokens_total"):
        wait_for(f"{metric} scraped", has(metric), 180)
    # Two more scrapes and rule evaluations after the last series appeared.
    time.sleep(3)

    _, names = call(f"{base}/api/v1/label/__name__/values")
    exported = set(names["data"])
    failures = []
    for where, expr in panel_exprs():
        # Metric names, recording rules' (`level:metric:operations`) included.
        names_in = {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if "infermesh_" in t}
        for metric in names_in:
            if metric not in exported:
                failures.append(f"{where}: {metric} is not exported")
        if not query(base, substitute(expr)):
            failures.append(f"{where}: no series for {expr}")
    _, v = call(f"{base}/api/v1/label/model/values?" +
                urllib.parse.urlencode({"match[]": "infermesh_inference_requests_total"}))
    if not v["data"]:
        failures.append("the $model variable's label_values query is empty")

    _, v = call(f"{base}/api/v1/rules")
    rules = [r for g in v["data"]["groups"] for r in g["rules"]]
    assert len(rules) >= 12, rules
    alerts = set()
    for r in rules:
        if r["health"] != "ok":
            failures.append(f"rule {r['name']}: {r['health']} {r.get('lastError')}")
        if r["type"] == "recording":
            expr = r["name"]
        else:
            alerts.add(r["name"])
            expr = re.sub(r"\s*(>|<|==|!=|>=|<=)\s*[0-9.]+\s*$", "", r["query"])
            assert expr != r["query"], f"alert {r['name']} does not end in a threshold: {r['query']}"
        if not query(base, expr):
            failures.append(f"rule {r['name']}: no series for {expr}")
    assert not failures, "\n".join(failures)

    routed = {re.search(r"alertname=(\S+)", line).group(1)
              for line in (ROOT / "deploy" / "alertmanager" / "tests" / "routes.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert alerts <= routed, f"alerts without an expected receiver in routes.txt: {alerts - routed}"

    # Live drift covers the models that carry a reference, predictions included.
    cols = {(s["metric"]["model"], s["metric"]["feature"]) for s in query(base, "infermesh_drift_score")}
    assert ("anomaly", "score") in cols and ("anomaly", "is_anomaly") in cols and ("fraud", "output__0") in cols, cols


def test_an_unreadable_reference_alerts_through_alertmanager(up, prometheus):
    base = prometheus

    def firing():
        _, v = call(f"{base}/api/v1/alerts")
        return [a for a in v["data"]["alerts"]
                if a["labels"]["alertname"] == "InfermeshDriftReferenceUnreadable" and a["state"] == "firing"]

    got = wait_for("InfermeshDriftReferenceUnreadable firing", firing, 60)
    assert [a["labels"]["model"] for a in got] == ["fraud-broken"], got

    def delivered():
        return [(path, a) for path, body in Webhook.received for a in body["alerts"]
                if a["labels"]["alertname"] == "InfermeshDriftReferenceUnreadable"]

    got = wait_for("the alert at the data-science webhook", delivered, 60)
    assert {path for path, _ in got} == {"/alerts/data-science"}, got
    assert got[0][1]["labels"]["version"] == "1", got
