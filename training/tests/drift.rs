//! `infermesh drift` against Evidently 0.7.23 on the committed fixtures of
//! `tools/drift_evidently.py fixtures` (each case: the two tables and Evidently's result):
//! the same column types, tests, thresholds and decisions, scores within 1e-6, the same
//! dataset-drift count and share. Plus the refusals.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use infermesh_training::drift::DriftArgs;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drift")
}

fn args(reference: PathBuf, current: PathBuf) -> DriftArgs {
    DriftArgs {
        command: None,
        reference: Some(reference),
        current: Some(current),
        json: true,
        html: None,
        columns: None,
        method: None,
        num_method: None,
        cat_method: None,
        threshold: None,
        drift_share: 0.5,
        fail_on_drift: false,
        separator: None,
        shared_columns: false,
        tracking_uri: None,
        registry: PathBuf::from("run/registry"),
        registry_cache: None,
        log_to_run: false,
        embeddings: Vec::new(),
        embeddings_method: None,
        embeddings_threshold: None,
        embeddings_bootstrap: None,
        embeddings_distance: "euclidean".into(),
    }
}

fn case_args(dir: &Path, options: &Value) -> Result<DriftArgs> {
    let ext = if dir.join("reference.parquet").is_file() {
        "parquet"
    } else {
        "csv"
    };
    let mut a = args(
        dir.join(format!("reference.{ext}")),
        dir.join(format!("current.{ext}")),
    );
    let test = |k: &str| -> Result<_> {
        options
            .get(k)
            .and_then(Value::as_str)
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::from)
    };
    a.method = test("method")?;
    a.num_method = test("num_method")?;
    a.cat_method = test("cat_method")?;
    a.threshold = options.get("threshold").and_then(Value::as_f64);
    if let Some(s) = options.get("drift_share").and_then(Value::as_f64) {
        a.drift_share = s;
    }
    Ok(a)
}

#[test]
fn every_fixture_matches_evidently() -> Result<()> {
    let mut cases = 0;
    let mut columns = 0;
    for entry in std::fs::read_dir(fixtures())? {
        let dir = entry?.path();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let ours = case_args(&dir, &expected["options"])?
            .report()
            .with_context(|| format!("case {name}"))?
            .to_json();
        let theirs = &expected["evidently"];
        for key in [
            "dataset_drift",
            "number_of_drifted_columns",
            "number_of_columns",
        ] {
            assert_eq!(ours[key], theirs[key], "{name}: {key}");
        }
        let share = |v: &Value| v["share_of_drifted_columns"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (share(&ours) - share(theirs)).abs() < 1e-12,
            "{name}: share"
        );
        let skipped: Vec<&Value> = ours["skipped_columns"]
            .as_array()
            .map(|a| a.iter().map(|s| &s["column"]).collect())
            .unwrap_or_default();
        let their_skipped: Vec<&Value> = theirs["skipped_columns"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        assert_eq!(skipped, their_skipped, "{name}: skipped columns");
        let their_columns = theirs["columns"].as_object().context("evidently columns")?;
        assert_eq!(
            ours["columns"].as_object().map(serde_json::Map::len),
            Some(their_columns.len()),
            "{name}: columns"
        );
        for (column, t) in their_columns {
            let o = &ours["columns"][column];
            for key in ["column_type", "stattest", "threshold", "drift_detected"] {
                assert_eq!(o[key], t[key], "{name}.{column}: {key}");
            }
            let (a, b) = (
                o["drift_score"].as_f64().unwrap_or(f64::NAN),
                t["drift_score"].as_f64().unwrap_or(f64::NAN),
            );
            assert!(
                (a - b).abs() <= 1e-6,
                "{name}.{column}: drift score {a} against Evidently's {b}"
            );
            columns += 1;
        }
        cases += 1;
    }
    // The generator writes six cases; a lost folder must not pass silently.
    assert_eq!(cases, 6, "fixture cases");
    assert!(columns >= 40, "{columns} columns compared");
    Ok(())
}

#[test]
fn the_json_has_evidently_data_drift_table_fields() -> Result<()> {
    let dir = fixtures().join("small");
    let text = args(dir.join("reference.csv"), dir.join("current.csv")).run()?;
    let v: Value = serde_json::from_str(&text)?;
    for key in [
        "dataset_drift",
        "share_of_drifted_columns",
        "number_of_drifted_columns",
        "columns",
    ] {
        assert!(v.get(key).is_some(), "{key} in {text}");
    }
    let amount = &v["columns"]["amount"];
    for key in [
        "column_type",
        "stattest",
        "drift_score",
        "threshold",
        "drift_detected",
    ] {
        assert!(amount.get(key).is_some(), "{key} in {amount}");
    }
    // Without --json: a table naming every column.
    let mut plain = args(dir.join("reference.csv"), dir.join("current.csv"));
    plain.json = false;
    let table = plain.run()?;
    assert!(table.starts_with("dataset drift: yes"), "{table}");
    assert!(
        table.contains("amount") && table.contains("skipped note"),
        "{table}"
    );
    // --fail-on-drift: the same report, and the run says it failed.
    let mut gated = args(dir.join("reference.csv"), dir.join("current.csv"));
    gated.fail_on_drift = true;
    let (text, failed) = gated.run_with_status()?;
    assert!(failed && text.contains("\"dataset_drift\": true"), "{text}");
    Ok(())
}

#[test]
fn bad_tables_and_options_are_clear_errors() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let write = |name: &str, body: &str| -> Result<PathBuf> {
        let p = tmp.path().join(name);
        std::fs::write(&p, body)?;
        Ok(p)
    };
    // b: two values in four rows, categorical (more than half distinct would be text).
    let reference = write("r.csv", "a,b\n1.5,x\n2.5,y\n3.5,x\n4.5,x\n")?;
    let missing = write("m.csv", "a\n1.5\n2.5\n")?;
    let text_b = write("t.csv", "a,b\n1.5,x\n2.5,y\n")?;
    let empty = write("e.csv", "a,b\nNA,x\n,y\n")?;
    let strings = write("s.csv", "a,b\nlow,x\nhigh,y\nlow,x\n")?;

    let err = |r: &PathBuf, c: &PathBuf| -> String {
        match args(r.clone(), c.clone()).report() {
            Ok(report) => format!("no error: {report:?}"),
            Err(e) => e.to_string(),
        }
    };
    // A current column the reference lacks.
    assert!(
        err(&missing, &reference).contains("'b' is in the current table but not in the reference"),
        "{}",
        err(&missing, &reference)
    );
    // Only missing values left on one side.
    assert!(
        err(&empty, &reference).contains("reference sample is empty"),
        "{}",
        err(&empty, &reference)
    );
    // Numbers in the current table, words in the reference.
    assert!(
        err(&strings, &text_b).contains("numerical in the current table but object"),
        "{}",
        err(&strings, &text_b)
    );
    // A file that is not there.
    let gone = tmp.path().join("gone.csv");
    assert!(err(&reference, &gone).contains("no such file"));
    // A test that does not apply to the column's type.
    let mut a = args(reference.clone(), reference.clone());
    a.columns = Some(vec!["b".into()]);
    a.method = Some("ks".parse()?);
    let e = a.report().map(|_| ()).map_err(|e| e.to_string());
    assert!(
        matches!(&e, Err(m) if m.contains("'ks' does not apply to cat column 'b'")),
        "{e:?}"
    );
    // An unknown test name and an impossible share.
    assert!("kolmogorov".parse::<infermesh_drift::StatTest>().is_err());
    let mut a = args(reference.clone(), reference);
    a.drift_share = 1.5;
    assert!(a.report().is_err());
    Ok(())
}

#[test]
fn a_reference_profile_gives_the_same_report_as_the_table() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for entry in std::fs::read_dir(fixtures())? {
        let dir = entry?.path();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json"))?)?;
        let from_table = case_args(&dir, &expected["options"])?;
        let profile = tmp.path().join(format!(
            "{}.parquet",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let written = infermesh_training::drift::ProfileArgs {
            data: from_table.reference.clone().context("reference")?,
            out: profile.clone(),
            columns: None,
            separator: None,
        }
        .run()?;
        assert!(written.starts_with("profiled "), "{written}");
        let mut from_profile = case_args(&dir, &expected["options"])?;
        from_profile.reference = Some(profile);
        let (a, b) = (from_table.report()?, from_profile.report()?);
        assert_eq!(a.columns.len(), b.columns.len());
        for ((na, ca), (nb, cb)) in a.columns.iter().zip(&b.columns) {
            assert_eq!(
                (na, ca.stattest, ca.drift_detected),
                (nb, cb.stattest, cb.drift_detected)
            );
            assert!(
                (ca.drift_score - cb.drift_score).abs() < 1e-12,
                "{}: {na}: {} against {}",
                dir.display(),
                ca.drift_score,
                cb.drift_score
            );
        }
    }
    // The small case's 300-row reference of rounded and categorical values shrinks.
    let small = fixtures().join("small/reference.csv");
    let out = tmp.path().join("small-cat.parquet");
    infermesh_training::drift::ProfileArgs {
        data: small,
        out: out.clone(),
        columns: Some(vec!["channel".into(), "rating".into()]),
        separator: None,
    }
    .run()?;
    let columns = infermesh_training::drift::read_profile(&out)?.context("a profile")?;
    assert_eq!(columns.len(), 2);
    assert_eq!(columns[0].1.len(), 300);
    Ok(())
}

#[test]
fn a_folder_of_inference_log_files_is_one_current_table_with_shared_columns() -> Result<()> {
    use polars::prelude::*;
    let tmp = tempfile::tempdir()?;
    let x = |i: usize| ((i * 37) % 101) as f64 / 10.0 + if i >= 150 { 3.0 } else { 0.0 };
    let c = |i: usize| ["a", "b", "c"][(i * 7) % 3];
    // The reference: 300 rows of x and c.
    let mut reference = String::from("x,c\n");
    for i in 0..300 {
        reference.push_str(&format!("{},{}\n", x(i % 150), c(i)));
    }
    std::fs::write(tmp.path().join("reference.csv"), reference)?;
    // The current rows as one CSV, and as two log files with the log's metadata columns.
    let mut current = String::from("x,c\n");
    for i in 0..300 {
        current.push_str(&format!("{},{}\n", x(i), c(i)));
    }
    std::fs::write(tmp.path().join("current.csv"), current)?;
    let day = tmp.path().join("fraud/1/2026-12-06");
    std::fs::create_dir_all(&day)?;
    for (k, rows) in [(0, 0..170), (1, 170..300)] {
        let n = rows.len();
        let mut df = DataFrame::new_infer_height(vec![
            Column::new("timestamp_ms".into(), vec![1_765_000_000_000i64; n]),
            Column::new("model".into(), vec!["fraud"; n]),
            Column::new("version".into(), vec![1i64; n]),
            Column::new("x".into(), rows.clone().map(x).collect::<Vec<f64>>()),
            Column::new("c".into(), rows.map(c).collect::<Vec<&str>>()),
        ])?;
        let mut f = std::fs::File::create(day.join(format!("19000{k}Z-0.parquet")))?;
        ParquetWriter::new(&mut f).finish(&mut df)?;
    }
    // A hidden (half-written) file is not read.
    std::fs::write(day.join(".190002Z-0.parquet.tmp"), b"partial")?;

    let single = args(
        tmp.path().join("reference.csv"),
        tmp.path().join("current.csv"),
    )
    .report()?;
    let mut a = args(tmp.path().join("reference.csv"), day.clone());
    let err = a
        .report()
        .expect_err("the log's metadata columns are not in the reference")
        .to_string();
    assert!(err.contains("timestamp_ms"), "{err}");
    a.shared_columns = true;
    let folder = a.report()?;
    assert_eq!(folder.columns, single.columns);
    assert!(folder.columns.iter().any(|(_, c)| c.drift_detected));
    let skipped: Vec<&str> = folder.skipped.iter().map(|s| s.column.as_str()).collect();
    assert_eq!(skipped, ["timestamp_ms", "model", "version"]);

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    let err = args(tmp.path().join("reference.csv"), empty)
        .report()
        .expect_err("an empty folder is no table")
        .to_string();
    assert!(err.contains("no .parquet file"), "{err}");
    Ok(())
}
