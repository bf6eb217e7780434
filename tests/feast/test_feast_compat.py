"""Feast's SDK and infermesh's feature store read and write the same data, both ways.

- Feast's `materialize` writes Redis; `infermesh features serve` reads the same values.
- infermesh writes (`/push`, `infermesh features materialize`); Feast's `get_online_features`
  reads them.
- Feast's `remote` online store reads and writes through `infermesh features serve`.
- Feast's own generated gRPC stubs (`feast.serving.ServingService`, `GrpcFeatureServer`) call it.
- The registry.db that `feast apply` wrote is what the server loaded (conftest).
"""
import json
import subprocess
import urllib.request
from datetime import datetime, timedelta, timezone

import grpc
import pandas as pd
import pytest
from feast import FeatureStore
from feast.protos.feast.serving import GrpcServer_pb2, GrpcServer_pb2_grpc
from feast.protos.feast.serving import ServingService_pb2 as serving_pb2
from feast.protos.feast.serving import ServingService_pb2_grpc as serving_grpc
from feast.protos.feast.types import Value_pb2

from conftest import binary, redis_url, write_yaml

FRAUD = ["user_spend:user_avg_spend", "device_risk:device_risk_score"]


def post(addr, path, body):
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
        return r.status, text


def infermesh_read(addr, features, entities):
    status, text = post(addr, "/get-online-features", {"entities": entities, "features": features})
    assert status == 200, text
    out = json.loads(text)
    names = out["metadata"]["feature_names"]
    return {n: col for n, col in zip(names, out["results"])}


def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


def write_sources(repo, users, devices):
    t = now() - timedelta(minutes=5)
    pd.DataFrame({"user_id": [u for u, _ in users], "user_avg_spend": [s for _, s in users],
                  "event_timestamp": [t] * len(users)}).to_parquet(repo / "data" / "user_spend.parquet")
    pd.DataFrame({"device_id": [d for d, _ in devices],
                  "device_risk_score": [s for _, s in devices],
                  "event_timestamp": [t] * len(devices)}).to_parquet(
        repo / "data" / "device_risk.parquet")
    pd.DataFrame({"user_id": [u for u, _ in users],
                  "session_product_views": [[f"p{i}", f"p{i + 1}"] for i in range(len(users))],
                  "event_timestamp": [t] * len(users)}).to_parquet(
        repo / "data" / "session_views.parquet")


def test_feast_materialize_then_infermesh_reads(repo, server):
    path, _ = repo
    write_sources(path, [("u1", 12.5), ("u2", 40.0)], [("d1", 0.25), ("d2", 0.9)])
    store = FeatureStore(repo_path=str(path))
    store.materialize(now() - timedelta(hours=1), now() + timedelta(minutes=1))
    entities = {"user_id": ["u1", "u2", "nobody"], "device_id": ["d1", "d2", "d1"]}
    ours = infermesh_read(server, FRAUD + ["session_views:session_product_views"], entities)
    feast = store.get_online_features(
        features=FRAUD + ["session_views:session_product_views"],
        entity_rows=[{"user_id": u, "device_id": d}
                     for u, d in zip(entities["user_id"], entities["device_id"])]).to_dict()
    for name in ["user_avg_spend", "device_risk_score", "session_product_views"]:
        assert ours[name]["values"] == feast[name], name
    assert ours["user_avg_spend"]["values"] == [12.5, 40.0, None]
    assert ours["user_avg_spend"]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert ours["session_product_views"]["values"][0] == ["p0", "p1"]


def test_infermesh_writes_then_feast_reads(repo, server, tmp_path):
    path, project = repo
    t = (now() - timedelta(seconds=30)).isoformat()
    status, _ = post(server, "/push", {
        "push_source_name": "user_spend_push", "to": "online",
        "df": {"user_id": ["w1", "w2"], "user_avg_spend": [3.5, 1e-3], "event_timestamp": [t, t]}})
    assert status == 200
    # `infermesh features materialize` from a Parquet file.
    src = tmp_path / "devices.parquet"
    pd.DataFrame({"device_id": ["wd1", "wd1", "wd2"], "device_risk_score": [0.1, 0.7, 0.3],
                  "event_timestamp": [now() - timedelta(minutes=3), now() - timedelta(minutes=1),
                                      now() - timedelta(minutes=2)]}).to_parquet(src)
    out = subprocess.run(
        [binary(), "features", "materialize", "--registry", str(path / "data" / "registry.db"),
         "--project", project, "--source", str(src), "--view", "device_risk",
         "--redis-url", redis_url(), "--no-progress"],
        check=True, capture_output=True, text=True)
    assert "2 entities, 2 written" in out.stdout, out.stdout
    store = FeatureStore(repo_path=str(path))
    got = store.get_online_features(
        features=FRAUD,
        entity_rows=[{"user_id": "w1", "device_id": "wd1"},
                     {"user_id": "w2", "device_id": "wd2"}]).to_dict()
    assert got["user_avg_spend"] == [3.5, 1e-3]
    # The latest row per device.
    assert got["device_risk_score"] == [0.7, 0.3]


def test_feasts_remote_online_store_through_infermesh(repo, server, tmp_path):
    path, project = repo
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "data").mkdir()
    (remote / "data" / "registry.db").write_bytes((path / "data" / "registry.db").read_bytes())
    write_yaml(remote, project, f"  type: remote\n  path: http://{server}\n")
    store = FeatureStore(repo_path=str(remote))
    # Writes through infermesh's /write-to-online-store ...
    store.write_to_online_store("device_risk", pd.DataFrame({
        "device_id": ["r1"], "device_risk_score": [0.125],
        "event_timestamp": [now() - timedelta(seconds=10)], "created": [now()]}))
    # ... and reads through /get-online-features.
    got = store.get_online_features(
        features=FRAUD, entity_rows=[{"user_id": "u1", "device_id": "r1"},
                                     {"user_id": "nobody", "device_id": "nothing"}]).to_dict()
    assert got["device_risk_score"] == [0.125, None]
    assert got["user_avg_spend"][1] is None
    ours = infermesh_read(server, ["device_risk:device_risk_score"], {"device_id": ["r1"]})
    assert ours["device_risk_score"]["values"] == [0.125]


def test_feasts_grpc_stubs_call_infermesh(server):
    channel = grpc.insecure_channel(server)
    serving = serving_grpc.ServingServiceStub(channel)
    info = serving.GetFeastServingInfo(serving_pb2.GetFeastServingInfoRequest())
    assert info.version.startswith("infermesh")
    listen = GrpcServer_pb2_grpc.GrpcFeatureServerStub(channel)
    t = (now() - timedelta(seconds=5)).isoformat()
    pushed = listen.Push(GrpcServer_pb2.PushRequest(
        features={"user_id": "g1", "user_avg_spend": "8.75", "event_timestamp": t},
        stream_feature_view="user_spend_push", to="online"))
    assert pushed.status
    req = serving_pb2.GetOnlineFeaturesRequest(
        features=serving_pb2.FeatureList(val=["user_spend:user_avg_spend"]),
        entities={"user_id": Value_pb2.RepeatedValue(val=[Value_pb2.Value(string_val="g1")])},
        full_feature_names=True)
    for stub in (serving, listen):
        resp = stub.GetOnlineFeatures(req)
        assert list(resp.metadata.feature_names.val) == ["user_id", "user_spend__user_avg_spend"]
        assert resp.results[1].values[0].double_val == 8.75
        assert resp.results[1].statuses[0] == serving_pb2.FieldStatus.PRESENT
    bad = serving_pb2.GetOnlineFeaturesRequest(
        features=serving_pb2.FeatureList(val=["user_spend:user_avg_spend"]),
        entities={"user_id": Value_pb2.RepeatedValue(val=[Value_pb2.Value(int64_val=1)])})
    with pytest.raises(grpc.RpcError) as e:
        serving.GetOnlineFeatures(bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
