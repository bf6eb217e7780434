"""Daily recommender retrain: train -> evaluate -> register challenger -> promote if the gate
passes, each step the `infermesh` CLI through BashOperator. Airflow Variables (defaults in
brackets):

- infermesh_bin            the CLI binary ["infermesh"]
- infermesh_tracking_uri   MLflow tracking URI; empty: the local registry [""]
- infermesh_registry       local registry directory ["run/registry"]
- recs_interactions        interactions table (CSV, TSV or Parquet) ["data/interactions.csv"]
- recs_holdout             held-out interactions for evaluation ["data/interactions-holdout.csv"]
- recs_user_col / recs_item_col   column names ["user_id" / "item_id"]
- recs_model_name          registered model name ["recs"]
- recs_epochs / recs_components   training sizes ["20" / "32"]
- recs_work_dir            where run directories go ["run/airflow/recs"]

`eval recs` writes precision@10, recall@10 and AUC into the version's card.json, which the
promotion gate (`precision_at_k>=champion`) compares.
"""
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

from infermesh_cli import BIN, REG_FLAGS, var

NAME = var("recs_model_name", "recs")
OUT = var("recs_work_dir", "run/airflow/recs") + "/{{ ts_nodash }}"
COLS = f'--user-col "{var("recs_user_col", "user_id")}" --item-col "{var("recs_item_col", "item_id")}"'

with DAG(
    dag_id="recs_daily_retrain",
    description="Retrain the LightFM-style recommender, register it as challenger, promote it "
    "if its precision@10 is at least the champion's",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    tags=["infermesh", "recommendations"],
) as dag:
    train = BashOperator(
        task_id="train",
        bash_command=(
            f'rm -rf "{OUT}" && "{BIN}" train recs '
            f'--interactions "{var("recs_interactions", "data/interactions.csv")}" {COLS} '
            f'--epochs "{var("recs_epochs", "20")}" --components "{var("recs_components", "32")}" '
            f'--out "{OUT}"'
        ),
    )
    evaluate = BashOperator(
        task_id="evaluate",
        bash_command=(
            f'"{BIN}" eval recs --model "{OUT}" '
            f'--train "{var("recs_interactions", "data/interactions.csv")}" '
            f'--test "{var("recs_holdout", "data/interactions-holdout.csv")}" {COLS} '
            f'--k 10 --json > "{OUT}/eval.json" && '
            "python3 -c 'import json, sys; e = json.load(open(sys.argv[1])); "
            "json.dump({\"metrics\": e[\"metrics\"]}, open(sys.argv[2], \"w\"))' "
            f'"{OUT}/eval.json" "{OUT}/card.json"'
        ),
    )
    register = BashOperator(
        task_id="register_challenger",
        bash_command=f'"{BIN}" register "{NAME}" --dir "{OUT}" --alias challenger {REG_FLAGS}',
    )
    promote = BashOperator(
        task_id="promote_if_better",
        bash_command=(
            f'"{BIN}" promote "{NAME}" --from challenger --alias champion '
            f'--require "precision_at_k>=champion" {REG_FLAGS}; '
            # Exit status 3: a gate did not hold. That is "not better", not a failure: the
            # task is skipped (Airflow's skip_on_exit_code) and the champion stays.
            'rc=$?; [ "$rc" -eq 3 ] && exit 99; exit "$rc"'
        ),
        skip_on_exit_code=99,
    )
    train >> evaluate >> register >> promote
