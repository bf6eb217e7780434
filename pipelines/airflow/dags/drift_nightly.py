"""Nightly drift: each champion's last day of served rows against its training profile.

For every model of `drift_models`, `infermesh drift` compares the day's inference log that
`infermesh serve --log-dir` wrote for the version the alias points at
(`<inference_log_dir>/<model>/<version>/<day>`, the day being the run's `ds`) with that
version's `drift_reference.parquet` (fetched from the registry), as Evidently's
DataDriftPreset does. With MLflow the report is logged on the run that made the version
(metrics `drift_share`, `drift_dataset_drift`, `drift_score.<column>`; the JSON and HTML
reports under `drift/<day>/`). The quality gate is skipped (not failed) when a model's data
drifted, as the fraud DAG's promote task is when its gate does not hold.

Airflow Variables (defaults in brackets):

- infermesh_bin            the CLI binary ["infermesh"]
- infermesh_tracking_uri   MLflow tracking URI; empty: the local registry [""]
- infermesh_registry       local registry directory, used without a tracking URI ["run/registry"]
- drift_models             registered model names, comma-separated ["fraud"]
- drift_alias              the alias whose version is checked ["champion"]
- inference_log_dir        the servers' --log-dir ["run/inference-log"]
- drift_work_dir           where the reports go ["run/airflow/drift"]
"""
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from infermesh_cli import BIN, REG_FLAGS, URI, var

MODELS = var("drift_models", "fraud")
ALIAS = var("drift_alias", "champion")
LOG = var("inference_log_dir", "run/inference-log")
OUT = var("drift_work_dir", "run/airflow/drift") + "/{{ ds }}"

with DAG(
    dag_id="drift_nightly",
    description="Drift of each champion's last day of served rows against its training "
    "profile, logged to MLflow; the gate is skipped when the data drifted",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["infermesh", "drift"],
) as dag:
    report = BashOperator(
        task_id="drift_report",
        bash_command=(
            f'set -e; rm -rf "{OUT}"; mkdir -p "{OUT}"; '
            f'for m in $(echo "{MODELS}" | tr "," " "); do '
            f'"{BIN}" drift --reference "models:/$m@{ALIAS}" '
            f'--current "{LOG}/$m/{{version}}/{{{{ ds }}}}" --shared-columns '
            f'--json --html "{OUT}/$m.html" {REG_FLAGS} '
            f'$( [ -n "{URI}" ] && echo --log-to-run ) > "{OUT}/$m.json"; '
            'done'
        ),
    )
    gate = BashOperator(
        task_id="quality_gate",
        bash_command=(
            "python3 -c 'import glob, json, sys\n"
            "drifted = []\n"
            "for f in sorted(glob.glob(sys.argv[1] + \"/*.json\")):\n"
            "    r = json.load(open(f))\n"
            "    print(f, \"share of drifted columns\", r[\"share_of_drifted_columns\"])\n"
            "    drifted += [f] if r[\"dataset_drift\"] else []\n"
            "sys.exit(99 if drifted else 0)' "
            # Exit 99: the data drifted. The gate is skipped (Airflow's skip_on_exit_code),
            # not failed: the report is logged, and whoever reads the DAG sees the skip.
            f'"{OUT}"'
        ),
        skip_on_exit_code=99,
    )
    report >> gate
