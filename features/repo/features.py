"""The platform's shared features (Feast 0.67 definitions).

- user_avg_spend: published by the expense planner, read by fraud scoring.
- device_risk_score: read by fraud scoring.
- session_product_views: the products the user viewed most recently (most recent first),
  published by the recommendations tracker, read by the recommender.

features.toml beside this file defines the same views for infermesh without Feast; the test
command applies this repo with Feast and checks that both serve the same.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float64, String

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A platform user (the product APIs' user id).",
)
device = Entity(
    name="device",
    join_keys=["device_id"],
    value_type=ValueType.STRING,
    description="A device fingerprint seen on transactions.",
)

user_spend_source = FileSource(
    name="user_spend_source",
    path="data/user_spend.parquet",
    timestamp_field="event_timestamp",
)
user_spend_push = PushSource(name="user_spend_push", batch_source=user_spend_source)
user_spend = FeatureView(
    name="user_spend",
    entities=[user],
    ttl=timedelta(days=30),
    schema=[Field(name="user_id", dtype=String), Field(name="user_avg_spend", dtype=Float64)],
    source=user_spend_push,
    online=True,
    description="A user's average transaction amount.",
)

device_risk_source = FileSource(
    name="device_risk_source",
    path="data/device_risk.parquet",
    timestamp_field="event_timestamp",
)
device_risk_push = PushSource(name="device_risk_push", batch_source=device_risk_source)
device_risk = FeatureView(
    name="device_risk",
    entities=[device],
    ttl=timedelta(days=7),
    schema=[Field(name="device_id", dtype=String), Field(name="device_risk_score", dtype=Float64)],
    source=device_risk_push,
    online=True,
    description="A device's risk score in [0, 1].",
)

session_views_source = FileSource(
    name="session_views_source",
    path="data/session_views.parquet",
    timestamp_field="event_timestamp",
)
session_views_push = PushSource(name="session_views_push", batch_source=session_views_source)
session_views = FeatureView(
    name="session_views",
    entities=[user],
    ttl=timedelta(hours=2),
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="session_product_views", dtype=Array(String)),
    ],
    source=session_views_push,
    online=True,
    description="The products the user viewed most recently, most recent first.",
)

fraud_features = FeatureService(
    name="fraud_features",
    features=[user_spend[["user_avg_spend"]], device_risk[["device_risk_score"]]],
)
recs_features = FeatureService(name="recs_features", features=[session_views])
