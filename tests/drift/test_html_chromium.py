"""`infermesh drift --html` opened in headless Chromium (Debian `chromium`, which
scripts/test.sh installs): the page renders, its DOM after rendering holds the drift table
with a row per tested column and a plot (SVG with bars) per drifted column, and a screenshot
of it is not blank."""

import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd

BIN = os.environ.get("INFERMESH_BIN", "target/debug/infermesh")
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium(tmp_path, *args):
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_html_report_renders_in_chromium(tmp_path):
    rng = np.random.default_rng(3)
    n = 400
    ref = pd.DataFrame({
        "amount": rng.lognormal(3.0, 1.0, n), "steady": rng.normal(0, 1, n),
        "channel": rng.choice(["web", "app", "store"], n),
    })
    cur = pd.DataFrame({
        "amount": rng.lognormal(3.6, 1.0, n), "steady": rng.normal(0, 1, n),
        "channel": rng.choice(["web", "app", "store"], n, p=[0.7, 0.2, 0.1]),
    })
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_csv(tmp_path / "cur.csv", index=False)
    page = tmp_path / "report.html"
    out = subprocess.run(
        [BIN, "drift", "--reference", tmp_path / "ref.csv", "--current", tmp_path / "cur.csv",
         "--json", "--html", page],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    drifted = [c for c, v in report["columns"].items() if v["drift_detected"]]
    assert "amount" in drifted and "channel" in drifted and "steady" not in drifted

    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert '<table id="drift-table">' in dom
    for column in report["columns"]:
        assert f'<tr class="' in dom and f'data-column="{column}"' in dom
    assert dom.count("<svg") == len(drifted)
    assert dom.count("<rect") >= 2 * len(drifted)
    assert 'data-dataset-drift="true"' in dom

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # A blank page compresses to a few KB; the table, text and bars make it larger.
    assert len(data) > 20_000, len(data)
