"""Weekly fraud retrain: train -> evaluate -> register challenger -> promote if the gate passes.

Every step is the `infermesh` CLI through BashOperator; paths and URIs come from Airflow
Variables (defaults in brackets):

- infermesh_bin            the CLI binary ["infermesh"]
- infermesh_tracking_uri   MLflow tracking URI; empty: the local registry [""]
- infermesh_registry       local registry directory, used without a tracking URI ["run/registry"]
- fraud_data               training table (CSV or Parquet) ["data/transactions.csv"]
- fraud_label              label column ["is_fraud"]
- fraud_drop               columns left out, comma-separated [""]
- fraud_categorical        categorical columns, comma-separated [""]
- fraud_tune_trials        `--tune` trials (TPE search, nested MLflow runs); 0 trains once ["0"]
- fraud_model_name         registered model name ["fraud"]
- fraud_min_pr_auc         evaluation floor on the test PR-AUC ["0.0"]
- fraud_work_dir           where run directories go ["run/airflow/fraud"]

The challenger becomes champion only if its PR-AUC is at least the champion's
(`--require "pr_auc>=champion"`); otherwise `infermesh promote` exits with status 3, the
promote task is skipped (not failed) and the champion stays.
"""
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from infermesh_cli import BIN, REG_FLAGS, URI, var

NAME = var("fraud_model_name", "fraud")
OUT = var("fraud_work_dir", "run/airflow/fraud") + "/{{ ts_nodash }}"

with DAG(
    dag_id="fraud_weekly_retrain",
    description="Retrain the LightGBM fraud model, register it as challenger, promote it if "
    "it beats the champion",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["infermesh", "fraud"],
) as dag:
    train = BashOperator(
        task_id="train",
        bash_command=(
            f'rm -rf "{OUT}" && "{BIN}" train fraud --quiet '
            f'--data "{var("fraud_data", "data/transactions.csv")}" '
            f'--label "{var("fraud_label", "is_fraud")}" '
            f'--drop "{var("fraud_drop", "")}" '
            f'--categorical "{var("fraud_categorical", "")}" '
            f'--tune "{var("fraud_tune_trials", "0")}" '
            f'--out "{OUT}" $( [ -n "{URI}" ] && echo --tracking-uri "{URI}" )'
        ),
    )
    evaluate = BashOperator(
        task_id="evaluate",
        bash_command=(
            "python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); "
            "m = c[\"metrics\"][\"pr_auc\"]; floor = float(sys.argv[2]); "
            "print(\"test PR-AUC\", m, \"floor\", floor); sys.exit(0 if m >= floor else 1)' "
            f'"{OUT}/card.json" "{var("fraud_min_pr_auc", "0.0")}"'
        ),
    )
    register = BashOperator(
        task_id="register_challenger",
        bash_command=(
            f'"{BIN}" register "{NAME}" --dir "{OUT}" --alias challenger {REG_FLAGS}'
        ),
    )
    promote = BashOperator(
        task_id="promote_if_better",
        bash_command=(
            f'"{BIN}" promote "{NAME}" --from challenger --alias champion '
            f'--require "pr_auc>=champion" {REG_FLAGS}; '
            # Exit status 3: a gate did not hold. That is "not better", not a failure: the
            # task is skipped (Airflow's skip_on_exit_code) and the champion stays.
            'rc=$?; [ "$rc" -eq 3 ] && exit 99; exit "$rc"'
        ),
        skip_on_exit_code=99,
    )
    train >> evaluate >> register >> promote
