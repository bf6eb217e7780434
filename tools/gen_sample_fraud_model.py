#!/usr/bin/env python3
"""Trains the sample fraud model that `infermesh up` serves (deploy/sample-repository/fraud).

Synthetic card transactions with features a fraud team would have (amount, velocity, device
and merchant risk, geography); the label follows a noisy hidden rule, so the model learns
real-looking interactions. Deterministic (fixed seeds). Regenerate with:

    python3 -m venv ~/.cache/infermesh/venv-fixtures
    ~/.cache/infermesh/venv-fixtures/bin/pip install -r tools/requirements-fixtures.txt
    ~/.cache/infermesh/venv-fixtures/bin/python tools/gen_sample_fraud_model.py
"""
import json
import os

import numpy as np
import xgboost as xgb

FEATURES = [
    "amount", "hour_of_day", "is_night", "merchant_risk", "device_risk_score",
    "user_avg_spend", "amount_to_avg_ratio", "txn_count_1h", "txn_count_24h",
    "distance_from_home_km", "is_foreign", "card_present", "account_age_days",
    "failed_logins_24h", "session_product_views", "new_device",
]

ROOT = os.path.join(os.path.dirname(__file__), "..", "deploy", "sample-repository", "fraud")


def synth(n, rng):
    user_avg = rng.lognormal(3.6, 0.7, n)
    amount = user_avg * rng.lognormal(0.0, 0.8, n)
    hour = rng.integers(0, 24, n).astype(float)
    night = ((hour < 6) | (hour >= 23)).astype(float)
    merchant = rng.beta(1.2, 8.0, n)
    device = rng.beta(1.0, 10.0, n)
    c1h = rng.poisson(0.6, n).astype(float)
    c24 = c1h + rng.poisson(3.0, n)
    dist = rng.exponential(15.0, n)
    foreign = (rng.random(n) < 0.06).astype(float)
    present = (rng.random(n) < 0.55).astype(float)
    age = rng.exponential(700.0, n)
    fails = rng.poisson(0.15, n).astype(float)
    views = rng.poisson(6.0, n).astype(float)
    newdev = (rng.random(n) < 0.08).astype(float)
    ratio = amount / user_avg
    logit = (-6.0 + 1.1 * np.log1p(ratio) + 3.0 * merchant + 4.0 * device + 0.55 * c1h
             + 0.9 * night + 1.2 * foreign - 1.1 * present + 0.7 * fails + 1.3 * newdev
             + 0.015 * np.minimum(dist, 300) - 0.0008 * np.minimum(age, 2000) - 0.05 * views)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X = np.column_stack([amount, hour, night, merchant, device, user_avg, ratio, c1h, c24, dist,
                         foreign, present, age, fails, views, newdev]).astype(np.float32)
    # Some features are missing in production (new users, no device fingerprint).
    X[rng.random(n) < 0.05, FEATURES.index("device_risk_score")] = np.nan
    X[rng.random(n) < 0.03, FEATURES.index("user_avg_spend")] = np.nan
    return X, y


def main():
    rng = np.random.default_rng(20261122)
    X, y = synth(40000, rng)
    d = xgb.DMatrix(X, label=y, feature_names=FEATURES)
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.15, "subsample": 0.9,
              "eval_metric": "auc", "seed": 7, "nthread": 2}
    booster = xgb.train(params, d, num_boost_round=60)
    os.makedirs(os.path.join(ROOT, "1"), exist_ok=True)
    booster.save_model(os.path.join(ROOT, "1", "model.json"))
    Xt, yt = synth(5000, np.random.default_rng(1))
    p = booster.predict(xgb.DMatrix(Xt, feature_names=FEATURES))
    order = np.argsort(-p)
    top = yt[order[: len(order) // 20]].mean()
    print(f"fraud rate {y.mean():.3f}; precision in top 5% of held-out scores {top:.3f}")
    # Two held-out rows with their expected scores, used by the CLI's example and tests.
    example = {"features": {f: (None if np.isnan(v) else float(v)) for f, v in zip(FEATURES, Xt[order[0]])},
               "probability": float(p[order[0]])}
    with open(os.path.join(ROOT, "example.json"), "w") as fh:
        json.dump(example, fh, indent=1)


if __name__ == "__main__":
    main()
