"""What infermesh's Rust MLflow client logged, read back with MLflow's own Python client.

registry/tests/mlflow.rs (readback_record_for_the_python_client) logs a run, a registered
model version and an alias against the server scripts/test.sh started, and records what it
wrote in $INFERMESH_TEST_MLFLOW_RECORD/readback.json. This test fails when the record is
missing, so it cannot pass without the Rust side having run.
"""
import json
import os
import pathlib

import mlflow
from mlflow import MlflowClient


def record():
    path = pathlib.Path(os.environ["INFERMESH_TEST_MLFLOW_RECORD"]) / "readback.json"
    assert path.is_file(), f"{path} missing: the Rust readback test did not run"
    return json.loads(path.read_text())


def test_run_params_metrics_and_tags_read_back():
    rec = record()
    mlflow.set_tracking_uri(os.environ["INFERMESH_TEST_MLFLOW_URI"])
    client = MlflowClient()
    run = client.get_run(rec["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == rec["experiment"]
    assert run.data.params == rec["params"]
    for k, v in rec["tags"].items():
        assert run.data.tags[k] == v
    assert run.data.metrics == rec["metrics"]
    for key, values in rec["history"].items():
        hist = sorted(client.get_metric_history(rec["run_id"], key), key=lambda m: m.step)
        assert [m.value for m in hist] == values
        assert [m.step for m in hist] == list(range(len(values)))


def test_model_by_alias_downloads_what_was_uploaded(tmp_path):
    rec = record()
    mlflow.set_tracking_uri(os.environ["INFERMESH_TEST_MLFLOW_URI"])
    client = MlflowClient()
    mv = client.get_model_version_by_alias(rec["model"], rec["alias"])
    assert mv.version == rec["version"]
    assert mv.run_id == rec["run_id"]
    out = mlflow.artifacts.download_artifacts(
        f"models:/{rec['model']}@{rec['alias']}", dst_path=str(tmp_path)
    )
    files = {
        p.relative_to(out).as_posix(): p.read_text()
        for p in pathlib.Path(out).rglob("*")
        if p.is_file()
    }
    assert files == rec["files"]
