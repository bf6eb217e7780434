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
