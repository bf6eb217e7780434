"""The Airflow DAGs under pipelines/airflow/dags, run for real with `airflow dags test`
against the MLflow server scripts/test.sh started (INFERMESH_TEST_MLFLOW_URI) and the
`infermesh` binary it built (INFERMESH_BIN), on small generated data. Each run must end with a
registered version behind the `champion` alias.
"""
import csv
import json
import math
import os
import pathlib
import random
import subprocess
import uuid

import pytest
from mlflow import MlflowClient

DAGS = pathlib.Path(__file__).resolve().parents[2] / "pipelines" / "airflow" / "dags"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    env = airflow_env(home, {})
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    return home


def airflow_env(home, variables):
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
    )
    for k, v in variables.items():
        env[f"AIRFLOW_VAR_{k.upper()}"] = str(v)
    return env


def run_dag(home, dag_id, variables):
    env = airflow_env(home, variables)
    r = subprocess.run(["airflow", "dags", "test", dag_id], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        # The tasks' own output (the lines BashOperator's subprocess hook logs) first: the tail
        # of a failed run is mostly Airflow's bookkeeping.
        out = r.stdout + r.stderr
        tasks = [line for line in out.splitlines() if "subprocess.py" in line]
        pytest.fail("\n".join(tasks[-80:]) + "\n--- tail ---\n" + out[-3000:])
    return r


def task_states(home, dag_id, variables):
    """The task states of the DAG's latest run, from Airflow's metadata database."""
    env = airflow_env(home, variables)

    def last_json(args):
        r = subprocess.run(["airflow", *args, "-o", "json"], env=env, capture_output=True,
                           text=True, check=True)
        # Airflow logs warnings on stdout too; the JSON is the last line.
        return json.loads([line for line in r.stdout.splitlines() if line.strip()][-1])

    runs = last_json(["dags", "list-runs", dag_id])
    run_id = runs[0]["run_id"]
    states = last_json(["tasks", "states-for-dag-run", dag_id, run_id])
    return {t["task_id"]: t["state"] for t in states}


def test_dags_parse(airflow_home):
    env = airflow_env(airflow_home, {})
    # Parse the DAG folder into the metadata database (what the scheduler's processor does).
    subprocess.run(["airflow", "dags", "reserialize"], env=env, capture_output=True, check=True)
    r = subprocess.run(["airflow", "dags", "list-import-errors", "-o", "json"], env=env,
                       capture_output=True, text=True, check=True)
    # Airflow logs warnings on stdout too; the JSON is the last line.
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert lines and json.loads(lines[-1]) == [], r.stdout
    r = subprocess.run(["airflow", "dags", "list", "-o", "json"], env=env, capture_output=True,
                       text=True, check=True)
    assert "fraud_weekly_retrain" in r.stdout and "recs_daily_retrain" in r.stdout
    assert "drift_nightly" in r.stdout


def transactions(path, rows=3000, seed=5):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tx_id", "amount", "merchant", "new_device", "is_fraud"])
        for i in range(rows):
            amount = math.exp(rng.random() * 6)
            m = rng.randrange(4)
            dev = int(rng.random() < 0.2)
            logit = -5 + 0.6 * math.log(amount) + [0, 0.8, 2.0, 0.2][m] + 1.5 * dev
            fraud = int(rng.random() < 1 / (1 + math.exp(-logit)))
            w.writerow([f"tx{i}", f"{amount:.2f}", ["grocery", "travel", "crypto", "fuel"][m], dev, fraud])


def test_fraud_weekly_retrain_ends_with_a_champion(airflow_home, tmp_path):
    uri = os.environ["INFERMESH_TEST_MLFLOW_URI"]
    name = f"fraud-dag-{uuid.uuid4().hex[:10]}"
    data = tmp_path / "tx.csv"
    transactions(data)
    variables = dict(
        infermesh_bin=os.environ["INFERMESH_BIN"], infermesh_tracking_uri=uri,
        fraud_data=data, fraud_label="is_fraud", fraud_drop="tx_id",
        fraud_categorical="merchant", fraud_model_name=name, fraud_work_dir=tmp_path / "work",
    )
    run_dag(airflow_home, "fraud_weekly_retrain", variables)
    client = MlflowClient(uri)
    champion = client.get_model_version_by_alias(name, "champion")
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert champion.version == challenger.version == "1"
    run = client.get_run(champion.run_id)
    assert run.data.metrics["pr_auc"] > 0
    # A second week, tuned: the new challenger is promoted only if it is at least as good.
    variables["fraud_tune_trials"] = 4
    run_dag(airflow_home, "fraud_weekly_retrain", variables)
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert challenger.version == "2"
    trials = client.search_runs(
        [client.get_run(challenger.run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{challenger.run_id}'",
    )
    assert len(trials) == 4
    # Promoted only when the gate held; otherwise the promote task was skipped, not failed.
    week1 = client.get_run(run.info.run_id).data.metrics["pr_auc"]
    week2 = client.get_run(challenger.run_id).data.metrics["pr_auc"]
    want = "2" if week2 >= week1 else "1"
    assert client.get_model_version_by_alias(name, "champion").version == want, (week1, week2)


def interactions(path, holdout, users=60, items=80, seed=3):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f, open(holdout, "w", newline="") as h:
        wf, wh = csv.writer(f), csv.writer(h)
        for w in (wf, wh):
            w.writerow(["user_id", "item_id"])
        for u in range(users):
            group = u % 4
            liked = [i for i in range(items) if i % 4 == group]
            rng.shuffle(liked)
            for i in liked[:12]:
                wf.writerow([f"u{u}", f"p{i}"])
            for i in liked[12:15]:
                wh.writerow([f"u{u}", f"p{i}"])


def test_recs_daily_retrain_ends_with_a_champion(airflow_home, tmp_path):
    registry = tmp_path / "registry"
    data, holdout = tmp_path / "i.csv", tmp_path / "h.csv"
    interactions(data, holdout)
    variables = dict(
        infermesh_bin=os.environ["INFERMESH_BIN"], infermesh_tracking_uri="",
        infermesh_registry=registry, recs_interactions=data, recs_holdout=holdout,
        recs_epochs=10, recs_components=8, recs_work_dir=tmp_path / "work",
    )
    run_dag(airflow_home, "recs_daily_retrain", variables)
    aliases = (registry / "recs" / "aliases.json").read_text()
    assert '"champion": 1' in aliases and '"challenger": 1' in aliases
    assert (registry / "recs" / "1" / "recs.json").is_file()


def spend_table(path, rows=2000, seed=11):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["amount", "hour", "ratio"])
        for _ in range(rows):
            w.writerow([f"{rng.lognormvariate(3.5, 0.6):.3f}", rng.randrange(24),
                        f"{rng.random():.4f}"])


def serve_and_log(bin_path, uri, name, repo, log_dir, rows):
    """Serves `name@champion` from MLflow with the inference log on, sends `rows`, stops."""
    import signal
    import urllib.request

    proc = subprocess.Popen(
        [bin_path, "serve", "--model-repository", str(repo), "--model", f"{name}@champion",
         "--registry-uri", uri, "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
         "--poll-interval", "0", "--log-dir", str(log_dir), "--log-sample-rate", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        banner = proc.stdout.readline()
        # "infermesh serve: http A grpc B metrics C"
        http = banner.split()[3]
        body = json.dumps({"inputs": [{"name": "input__0", "shape": [len(rows), 3],
                                       "datatype": "FP32", "data": rows}]}).encode()
        req = urllib.request.Request(f"http://{http}/v2/models/{name}/infer", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_drift_nightly_logs_the_report_and_skips_its_gate_on_drift(airflow_home, tmp_path):
    uri = os.environ["INFERMESH_TEST_MLFLOW_URI"]
    bin_path = os.environ["INFERMESH_BIN"]
    name = f"spend-{uuid.uuid4().hex[:10]}"
    data = tmp_path / "spend.csv"
    spend_table(data)
    subprocess.run(
        [bin_path, "train", "anomaly", "--data", str(data), "--out", str(tmp_path / "v1"),
         "--trees", "20", "--tracking-uri", uri, "--experiment", name, "--register", name,
         "--alias", "champion"],
        check=True, capture_output=True)
    # A day of served rows far from the training data (10x amounts, all at 3 am).
    rng = random.Random(3)
    rows = [[rng.lognormvariate(3.5, 0.6) * 10, 3.0, rng.random()] for _ in range(300)]
    log_dir = tmp_path / "inference-log"
    serve_and_log(bin_path, uri, name, tmp_path / "repo", log_dir, rows)
    assert list((log_dir / name / "1").iterdir()), "the server logged the day"

    variables = dict(
        infermesh_bin=bin_path, infermesh_tracking_uri=uri, drift_models=name,
        inference_log_dir=log_dir, drift_work_dir=tmp_path / "work",
    )
    r = run_dag(airflow_home, "drift_nightly", variables)
    reports = list((tmp_path / "work").glob("*/*.json"))
    assert len(reports) == 1, reports
    report = json.loads(reports[0].read_text())
    assert report["dataset_drift"] is True
    assert report["columns"]["amount"]["drift_detected"] is True
    assert "score" in report["columns"] and "is_anomaly" in report["columns"]
    assert {s["column"] for s in report["skipped_columns"]} == {"timestamp_ms", "model", "version"}
    # The gate was skipped, not failed (the DAG run itself succeeded).
    assert task_states(airflow_home, "drift_nightly", variables) == {
        "drift_report": "success", "quality_gate": "skipped"}, r.stdout[-3000:]
    # The report is on the champion's run in MLflow.
    client = MlflowClient(uri)
    champion = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(champion.run_id)
    assert run.data.metrics["drift_dataset_drift"] == 1.0
    assert run.data.metrics["drift_score.amount"] > 0.1
    days = client.list_artifacts(champion.run_id, "drift")
    assert len(days) == 1
    files = {pathlib.Path(f.path).name for f in client.list_artifacts(champion.run_id, days[0].path)}
    assert files == {"drift_report.json", f"{name}.html"}
