//! Top-10 latency of one request over catalogues of 1,682 items (MovieLens 100k) and
//! 100,000 items, 32 components, exact scoring: `cargo bench -p infermesh-recs`.

use criterion::{Criterion, criterion_group, criterion_main};
use infermesh_recs::{
    DatasetBuilder, FitOptions, Hyper, Query, Recommender, ServeOptions, UnknownUser, fit,
};

/// A model with `items` items trained one epoch on synthetic interactions (the scores'
/// values do not matter for latency, only the shapes).
fn model(items: usize) -> Recommender {
    let mut b = DatasetBuilder::new();
    for i in 0..items {
        b.item(&format!("i{i}"));
    }
    for u in 0..1000usize {
        for n in 0..20usize {
            let i = (u * 7919 + n * 104_729) % items;
            b.interaction(&format!("u{u}"), &format!("i{i}"), 1.0);
        }
    }
    let data = b.build().expect("dataset");
    let hyper = Hyper {
        components: 32,
        ..Hyper::default()
    };
    let opts = FitOptions {
        epochs: 1,
        threads: 1,
        content_weight: 0.0,
    };
    let art = fit(&data, hyper, opts, |_, _| {}).expect("fit");
    let blend = art.blend;
    Recommender::new(
        art,
        ServeOptions {
            blend,
            max_k: 1000,
            unknown_user: UnknownUser::Popularity,
        },
    )
    .expect("recommender")
}

fn bench(c: &mut Criterion) {
    for items in [1_682usize, 100_000] {
        let rec = model(items);
        c.bench_function(&format!("recommend top-10 of {items} items, k=32"), |b| {
            b.iter(|| {
                rec.recommend(&Query {
                    user: "u17",
                    k: 10,
                    exclude_seen: true,
                    ..Query::default()
                })
                .expect("recommend")
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
