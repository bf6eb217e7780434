"""Writes models/anomaly/tests/fixtures/skl2onnx_iforest.{onnx,json}: a scikit-learn
IsolationForest exported by skl2onnx (ai.onnx.ml opset 3: one TreeEnsembleRegressor per tree),
and rows with what scikit-learn (score_samples, decision_function, predict) and ONNX Runtime
(the graph's `scores` and `label`) answer for them. infermesh-anomaly's ONNX importer is tested
against both (models/anomaly/tests/onnx.rs).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install -r tools/requirements-fixtures.txt
    /tmp/v/bin/python tools/gen_anomaly_onnx_fixture.py
"""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from sklearn.ensemble import IsolationForest

OUT = Path(__file__).resolve().parents[1] / "models" / "anomaly" / "tests" / "fixtures"


def main():
    rng = np.random.default_rng(20261206)
    n, f = 2000, 4
    X = rng.normal(size=(n, f)) * [1.0, 3.0, 0.5, 10.0] + [0.0, 5.0, -1.0, 100.0]
    X[:40] += rng.normal(scale=6.0, size=(40, f)) * [1.0, 3.0, 0.5, 10.0]
    X = X.astype(np.float32)
    model = IsolationForest(n_estimators=25, max_samples=128, contamination=0.02, random_state=7).fit(X)
    onx = to_onnx(model, X[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "skl2onnx_iforest.onnx").write_bytes(onx.SerializeToString())
    rows = np.concatenate([X[:40:4], X[1000:1040]]).astype(np.float32)
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    label, scores = sess.run(["label", "scores"], {"X": rows})
    doc = {
        "generator": "tools/gen_anomaly_onnx_fixture.py",
        "versions": {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
                     "onnxruntime": ort.__version__},
        "n_estimators": 25,
        "max_samples": int(model.max_samples_),
        "offset": float(model.offset_),
        "rows": rows.tolist(),
        "sklearn_score_samples": model.score_samples(rows).tolist(),
        "sklearn_decision_function": model.decision_function(rows).tolist(),
        "sklearn_predict": model.predict(rows).tolist(),
        "onnxruntime_scores": scores.ravel().astype(float).tolist(),
        "onnxruntime_label": label.ravel().astype(int).tolist(),
    }
    (OUT / "skl2onnx_iforest.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
