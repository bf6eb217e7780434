//! Hostile and corrupt artifacts are refused with their reason, never a panic or an
//! unbounded allocation.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::OnceLock;

use infermesh_topics::{LoadLimits, Matrix, TopicModel, TopicParams, UmapParams};
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

struct Fixture {
    model: TopicModel,
    meta: Vec<u8>,
    tensors: Vec<u8>,
    probe: Matrix,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let c = common::corpus(12, 3, 11);
        let mut params = TopicParams {
            umap: UmapParams {
                n_epochs: Some(60),
                ..UmapParams::default()
            },
            ..TopicParams::default()
        };
        params.hdbscan.min_cluster_size = 5;
        let model = TopicModel::fit(&c.texts, &c.embeddings, &params).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        Fixture {
            meta: std::fs::read(dir.path().join("topics.json")).unwrap(),
            tensors: std::fs::read(dir.path().join("topics.safetensors")).unwrap(),
            probe: common::corpus(2, 2, 12).embeddings,
            model,
        }
    })
}

fn load(meta: &[u8], tensors: &[u8]) -> Result<TopicModel, String> {
    TopicModel::from_bytes(meta, tensors, &LoadLimits::default()).map_err(|e| e.to_string())
}

/// The tensors file with `name`'s bytes replaced by `edit` of them (and optionally another
/// dtype / shape).
fn edit_tensor(
    name: &str,
    edit: impl Fn(&mut Vec<u8>),
    retype: Option<(Dtype, Vec<usize>)>,
) -> Vec<u8> {
    let f = fixture();
    let st = SafeTensors::deserialize(&f.tensors).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for t in owned.iter_mut().filter(|t| t.0 == name) {
        edit(&mut t.3);
        if let Some((dtype, shape)) = &retype {
            t.1 = *dtype;
            t.2 = shape.clone();
        }
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn set_i64(at: usize, v: i64) -> impl Fn(&mut Vec<u8>) {
    move |b: &mut Vec<u8>| b[at * 8..at * 8 + 8].copy_from_slice(&v.to_le_bytes())
}

fn meta_with(key: &str, value: serde_json::Value) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(&fixture().meta).unwrap();
    m[key] = value;
    serde_json::to_vec(&m).unwrap()
}

#[test]
fn the_fixture_loads_and_transforms_as_saved() {
    let f = fixture();
    let loaded = load(&f.meta, &f.tensors).unwrap();
    assert_eq!(
        loaded.transform(None::<&[String]>, &f.probe).unwrap(),
        f.model.transform(None::<&[String]>, &f.probe).unwrap()
    );
}

#[test]
fn truncated_files_are_refused() {
    let f = fixture();
    for cut in [0, 7, 8, 100, f.tensors.len() / 2, f.tensors.len() - 1] {
        let err = load(&f.meta, &f.tensors[..cut]).unwrap_err();
        assert!(
            err.contains("safetensors") || err.contains("bytes"),
            "cut {cut}: {err}"
        );
    }
    for cut in [0, 1, f.meta.len() / 2, f.meta.len() - 1] {
        let err = load(&f.meta[..cut], &f.tensors).unwrap_err();
        assert!(err.contains("topics.json"), "cut {cut}: {err}");
    }
}

#[test]
fn wrong_shapes_and_huge_claims_are_refused() {
    let f = fixture();
    let n = f.model.umap().n_train();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (meta_with("n_train", (n + 1).into()), "umap.train is F32"),
        (meta_with("input_dim", 25.into()), "umap.train is F32"),
        (
            meta_with("n_train", 1_000_000_000_000u64.into()),
            "max_rows",
        ),
        (meta_with("input_dim", 1_000_000u64.into()), "max_dims"),
        (meta_with("n_classes", 10_000_000u64.into()), "max_topics"),
        (meta_with("n_counts", 1_000_000_000u64.into()), "max_counts"),
        (meta_with("n_tree_rows", (3 * n).into()), "n_tree_rows"),
        (meta_with("min_samples", (n + 5).into()), "min_samples"),
        (meta_with("version", 2.into()), "version 1"),
        (meta_with("format", "bertopic-pickle".into()), "format"),
        (meta_with("extra", 1.into()), "unknown field"),
    ];
    for (meta, reason) in cases {
        let err = load(&meta, &f.tensors).unwrap_err();
        assert!(err.contains(reason), "{reason}: {err}");
    }
    // A header claiming a billion rows over 16 bytes of data.
    let header =
        br#"{"umap.train":{"dtype":"F32","shape":[1000000000,384],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 16]);
    assert!(load(&f.meta, &bytes).is_err());
    // A header length past the file.
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(load(&f.meta, &bytes).is_err());
}

#[test]
fn corrupt_arrays_are_refused_with_their_reason() {
    let f = fixture();
    let n = f.model.umap().n_train() as i64;
    let nan = f32::NAN.to_le_bytes();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            edit_tensor("hdbscan.tree.parent", set_i64(0, 3), None),
            "not a cluster",
        ),
        (edit_tensor("hdbscan.tree.child", set_i64(1, 0), None), ""),
        (
            edit_tensor("hdbscan.tree.child", set_i64(0, -5), None),
            "hdbscan.tree.child",
        ),
        (
            edit_tensor(
                "hdbscan.tree.lambda",
                |b| b[..8].copy_from_slice(&f64::NAN.to_le_bytes()),
                None,
            ),
            "lambda",
        ),
        (edit_tensor("hdbscan.selected", set_i64(0, n), None), ""),
        (
            edit_tensor("topics.cluster_topic", set_i64(0, 99), None),
            "topics.cluster_topic",
        ),
        (
            edit_tensor("topics.doc_topics", set_i64(0, -2), None),
            "topics.doc_topics",
        ),
        (
            edit_tensor("ctfidf.word", set_i64(0, 1 << 40), None),
            "ctfidf.word",
        ),
        (
            edit_tensor("ctfidf.count", set_i64(0, 0), None),
            "ctfidf.count",
        ),
        (
            edit_tensor("umap.embedding", |b| b[..4].copy_from_slice(&nan), None),
            "umap",
        ),
        (
            edit_tensor(
                "umap.ab",
                |b| b[..4].copy_from_slice(&(-1f32).to_le_bytes()),
                None,
            ),
            "umap",
        ),
        (edit_tensor("topics.sizes", set_i64(1, 1000), None), "size"),
        (
            edit_tensor(
                "hdbscan.core",
                |_| {},
                Some((Dtype::F32, vec![2 * n as usize])),
            ),
            "hdbscan.core",
        ),
    ];
    for (i, (tensors, reason)) in cases.into_iter().enumerate() {
        let err = load(&f.meta, &tensors)
            .err()
            .unwrap_or_else(|| panic!("case {i} was accepted"));
        assert!(err.contains(reason), "case {i}: {err}");
    }
    // A missing tensor.
    let st = SafeTensors::deserialize(&f.tensors).unwrap();
    let views: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "hdbscan.selected")
        .collect();
    let err = load(&f.meta, &safetensors::serialize(views, None).unwrap()).unwrap_err();
    assert!(err.contains("hdbscan.selected"), "{err}");
}

#[test]
fn load_limits_bound_the_files_before_reading() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    f.model.save(dir.path()).unwrap();
    let small = LoadLimits {
        max_file_bytes: 1000,
        ..LoadLimits::default()
    };
    let err = TopicModel::load(dir.path(), &small)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than the limit"), "{err}");
    let small = LoadLimits {
        max_meta_bytes: 10,
        ..LoadLimits::default()
    };
    assert!(TopicModel::load(dir.path(), &small).is_err());
    let few = LoadLimits {
        max_rows: 10,
        ..LoadLimits::default()
    };
    assert!(
        TopicModel::load(dir.path(), &few)
            .unwrap_err()
            .to_string()
            .contains("max_rows")
    );
    let words = LoadLimits {
        max_vocabulary: 3,
        ..LoadLimits::default()
    };
    assert!(
        TopicModel::load(dir.path(), &words)
            .unwrap_err()
            .to_string()
            .contains("max_vocabulary")
    );
    std::fs::remove_file(dir.path().join("topics.safetensors")).unwrap();
    assert!(TopicModel::load(dir.path(), &LoadLimits::default()).is_err());
    let limits: LoadLimits = serde_json::from_str(r#"{"max_rows": 5}"#).unwrap();
    assert_eq!(limits.max_rows, 5);
    assert!(serde_json::from_str::<LoadLimits>(r#"{"max_rowz": 5}"#).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any mutation of the arrays loads or is refused; whatever loads transforms or refuses.
    #[test]
    fn mutated_arrays_never_panic(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let f = fixture();
        let mut bytes = f.tensors.clone();
        for (at, b) in edits {
            let at = at % bytes.len();
            bytes[at] = b;
        }
        if let Ok(m) = load(&f.meta, &bytes) {
            let _ = m.transform(None::<&[String]>, &f.probe);
        }
    }

    /// Any mutation of the metadata loads or is refused.
    #[test]
    fn mutated_metadata_never_panics(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let f = fixture();
        let mut bytes = f.meta.clone();
        for (at, b) in edits {
            let at = at % bytes.len();
            bytes[at] = b"0123456789-,[]{}\" e.:".get(b as usize % 22).copied().unwrap_or(b'9');
        }
        if let Ok(m) = load(&bytes, &f.tensors) {
            let _ = m.transform(None::<&[String]>, &f.probe);
        }
    }

    /// Arbitrary bytes as either file are refused without a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let f = fixture();
        prop_assert!(load(&bytes, &f.tensors).is_err());
        prop_assert!(load(&f.meta, &bytes).is_err());
    }
}
