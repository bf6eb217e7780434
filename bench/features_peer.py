"""The Feast side of bench/features.sh: a feature repo of one view (user_stats: avg_spend,
txn_count, risk for users u1..uN) over the given Redis, applied and materialised with Feast
0.67 itself, so `feast serve` / `feast listen` and `infermesh features serve` read the same
rows. Usage: features_peer.py REPO_DIR REDIS_HOST:PORT USERS
"""
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

repo, redis, users = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(repo / "data").mkdir(parents=True, exist_ok=True)
(repo / "feature_store.yaml").write_text(
    "project: bench\nregistry: data/registry.db\nprovider: local\n"
    f"online_store:\n  type: redis\n  connection_string: \"{redis},db=0\"\n"
    "offline_store:\n  type: file\nentity_key_serialization_version: 3\n")
(repo / "features.py").write_text('''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
source = FileSource(name="user_stats_source", path="data/user_stats.parquet",
                    timestamp_field="event_timestamp")
user_stats = FeatureView(name="user_stats", entities=[user], ttl=timedelta(days=30),
    schema=[Field(name="user_id", dtype=String), Field(name="avg_spend", dtype=Float64),
            Field(name="txn_count", dtype=Int64), Field(name="risk", dtype=Float64)],
    source=source, online=True)
''')
rng = np.random.default_rng(7)
now = datetime.now(timezone.utc)
pd.DataFrame({
    "user_id": [f"u{i}" for i in range(1, users + 1)],
    "avg_spend": rng.gamma(2.0, 40.0, users),
    "txn_count": rng.integers(0, 500, users),
    "risk": rng.random(users),
    "event_timestamp": [now - timedelta(minutes=5)] * users,
}).to_parquet(repo / "data" / "user_stats.parquet")
feast = str(Path(sys.executable).parent / "feast")
subprocess.run([feast, "apply"], cwd=repo, check=True, capture_output=True)
subprocess.run([feast, "materialize", (now - timedelta(hours=1)).isoformat(),
                (now + timedelta(minutes=1)).isoformat()], cwd=repo, check=True, capture_output=True)
print(f"materialised {users} users into {redis}", file=sys.stderr)
