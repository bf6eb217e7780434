//! Tree prediction benchmarks on the fixture: XGBoost binary:logistic, 100 trees,
//! depth 6, 30 features (and the same in LightGBM). Peers run side by side from
//! `bench/trees_peer.py`; `bench/trees.sh` runs both and prints ratios.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use infermesh_model_core::TabularModel;
use infermesh_trees::{ModelFormat, TreeEnsemble, shap};

fn load(file: &str, format: ModelFormat) -> TreeEnsemble {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bench")
        .join(file);
    TreeEnsemble::load(&p, format).unwrap_or_else(|e| panic!("bench fixture {file}: {e}"))
}

fn rows(n: usize, nf: usize) -> Vec<f32> {
    // Deterministic pseudo-random features in the fixture's range.
    let mut s = 0x9e3779b97f4a7c15u64;
    (0..n * nf)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for (name, file, fmt) in [
        ("xgboost", "xgb_bench.json", ModelFormat::XgboostJson),
        ("lightgbm", "lgb_bench.txt", ModelFormat::Lightgbm),
    ] {
        let m = load(file, fmt);
        let nf = m.num_features();
        let one = rows(1, nf);
        let mut out1 = [0f32; 1];
        c.bench_function(&format!("{name}/predict_1_row"), |b| {
            b.iter(|| m.predict(black_box(&one), &mut out1).ok())
        });
        let many = rows(100_000, nf);
        let mut out = vec![0f32; 100_000];
        let mut g = c.benchmark_group(format!("{name}/batch"));
        g.sample_size(20);
        g.bench_function("predict_100k_rows", |b| {
            b.iter(|| m.predict(black_box(&many), &mut out).ok())
        });
        // Every 50th value missing: every block takes the NaN-aware walk.
        let mut holes = many.clone();
        holes.iter_mut().step_by(50).for_each(|v| *v = f32::NAN);
        g.bench_function("predict_100k_rows_2pct_missing", |b| {
            b.iter(|| m.predict(black_box(&holes), &mut out).ok())
        });
        g.finish();
        c.bench_function(&format!("{name}/treeshap_1_row"), |b| {
            b.iter(|| m.contributions(black_box(&one)).ok())
        });
        // The two TreeSHAP implementations directly: the per-split weights (`shap::FastShap`,
        // what `contributions` uses once the model keeps them) and Algorithm 2 for every tree.
        let tables = shap::FastShap::new(&m);
        c.bench_function(&format!("{name}/treeshap_tables_1_row"), |b| {
            b.iter(|| tables.contributions(&m, black_box(&one)))
        });
        c.bench_function(&format!("{name}/treeshap_reference_1_row"), |b| {
            b.iter(|| shap::reference_contributions(&m, black_box(&one)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
