//! Property tests of the loaders (XGBoost JSON and UBJSON, LightGBM text): on arbitrary bytes,
//! on LightGBM text made from its grammar with hostile numbers, and on mutations of small
//! valid models (numbers replaced by huge, negative or non-finite ones, child indices
//! rewired, header counts changed, arrays cut, bytes flipped, text truncated), loading never
//! panics and finishes within [`CASE_TIME`]; a model that does load predicts and explains
//! without panicking too.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use infermesh_model_core::TabularModel;
use infermesh_trees::{ModelFormat, TreeEnsemble};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// The bound on one case: a load plus, when it loads, a small prediction and explanation.
const CASE_TIME: Duration = Duration::from_secs(2);

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // No regression files written into the source tree; failures print their input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// Loads `bytes`; if they load, predicts a few rows (with missing and extreme values) and
/// explains one. Fails the case on a slow load; a panic fails it by itself.
fn exercise(bytes: &[u8], format: ModelFormat) -> Result<(), TestCaseError> {
    let start = Instant::now();
    if let Ok(m) = TreeEnsemble::from_bytes(bytes, format) {
        let nf = m.num_features();
        // Small models only: a mutated header may legitimately ask for 100k features.
        if nf * m.num_outputs() <= 100_000 {
            let values = [0.0, -1.5, f32::NAN, 3.0, 1e30, -0.0, 7.0];
            let rows: Vec<f32> = (0..4 * nf).map(|i| values[i % values.len()]).collect();
            let mut out = vec![0f32; 4 * m.num_outputs()];
            m.predict(&rows, &mut out).unwrap();
            m.contributions(&rows[..nf]).unwrap();
        }
    }
    let took = start.elapsed();
    prop_assert!(took < CASE_TIME, "{format:?} took {took:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Valid small models.

/// An XGBoost fixture cut to its first three trees (fast to load in a debug build).
fn xgb_base(name: &str) -> Value {
    let mut v: Value = serde_json::from_slice(&fixture(name)).unwrap();
    let model = &mut v["learner"]["gradient_booster"]["model"];
    for key in ["trees", "tree_info"] {
        if let Some(a) = model[key].as_array_mut() {
            a.truncate(3);
        }
    }
    v
}

fn xgb_bases() -> Vec<Value> {
    vec![
        xgb_base("xgb_binary_logistic.json"),
        xgb_base("xgb_multi_softprob.json"),
    ]
}

/// A LightGBM fixture cut to its first three trees.
fn lgb_base(name: &str) -> String {
    let text = String::from_utf8(fixture(name)).unwrap();
    let cut = text.find("Tree=3").unwrap();
    format!("{}end of trees\n", &text[..cut])
}

fn lgb_bases() -> Vec<String> {
    vec![lgb_base("lgb_binary.txt"), lgb_base("lgb_multiclass.txt")]
}

/// UBJSON of `v` as XGBoost writes it: numeric arrays typed (`[$d#` floats, `[$l#` ints),
/// everything else untyped.
fn ubj(v: &Value, out: &mut Vec<u8>) {
    fn len(n: usize, out: &mut Vec<u8>) {
        out.push(b'L');
        out.extend_from_slice(&(n as i64).to_be_bytes());
    }
    match v {
        Value::Null => out.push(b'Z'),
        Value::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => {
                out.push(b'L');
                out.extend_from_slice(&i.to_be_bytes());
            }
            None => {
                out.push(b'D');
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        },
        Value::String(s) => {
            out.push(b'S');
            len(s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(a)
            if !a.is_empty()
                && a.iter()
                    .all(|x| x.as_i64().is_some_and(|i| i32::try_from(i).is_ok())) =>
        {
            out.extend_from_slice(b"[$l#");
            len(a.len(), out);
            for x in a {
                out.extend_from_slice(&(x.as_i64().unwrap_or(0) as i32).to_be_bytes());
            }
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_f64) => {
            out.extend_from_slice(b"[$d#");
            len(a.len(), out);
            for x in a {
                out.extend_from_slice(&(x.as_f64().unwrap_or(0.0) as f32).to_be_bytes());
            }
        }
        Value::Array(a) => {
            out.push(b'[');
            for x in a {
                ubj(x, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            out.push(b'{');
            for (k, x) in m {
                len(k.len(), out);
                out.extend_from_slice(k.as_bytes());
                ubj(x, out);
            }
            out.push(b'}');
        }
    }
}

fn to_ubj(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ubj(v, &mut out);
    out
}

#[test]
fn the_bases_load_in_every_encoding() {
    for v in xgb_bases() {
        let j = TreeEnsemble::from_xgboost_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        let u = TreeEnsemble::from_xgboost_ubj(&to_ubj(&v)).unwrap();
        assert_eq!(j.num_trees(), 3);
        let rows = [0.3f32, -1.0, 2.0, f32::NAN, 0.0, 1.0];
        let (mut a, mut b) = (vec![0f32; j.num_outputs()], vec![0f32; u.num_outputs()]);
        j.predict(&rows, &mut a).unwrap();
        u.predict(&rows, &mut b).unwrap();
        assert_eq!(a, b);
    }
    for t in lgb_bases() {
        assert_eq!(TreeEnsemble::from_lightgbm_text(&t).unwrap().num_trees(), 3);
    }
}

// ---------------------------------------------------------------------------------------
// Strategies.

/// Numbers as text, as a LightGBM file or an XGBoost string field may hold them.
fn num_token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (-4i64..8).prop_map(|n| n.to_string()),
        2 => prop::sample::select(vec![
            "nan", "inf", "-inf", "-0", "0.5", "1e300", "-1e-300", "4294967295", "4294967296",
            "2147483648", "268435455", "268435456", "18446744073709551615",
            "99999999999999999999", "-9223372036854775808", "x", "",
        ])
        .prop_map(str::to_string),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// JSON values to put where a number was.
fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (-3i64..40).prop_map(Value::from),
        2 => prop::sample::select(vec![
            i64::MIN, -1, 0, (1 << 28) - 1, 1 << 28, (1 << 31) - 1, 1 << 31,
            i64::from(u32::MAX), 1 << 40, i64::MAX,
        ])
        .prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => num_token().prop_map(Value::from),
        1 => prop::sample::select(vec![json!(null), json!([]), json!({}), json!(true), json!([1, 2])]),
    ]
}

#[derive(Debug, Clone)]
enum ValueMut {
    /// Replace one number (or numeric string) anywhere.
    Set(Index, Value),
    /// Exchange two numbers anywhere.
    Swap(Index, Index),
    /// Rewire a child: tree, node, left or right, to a node index near the tree's range.
    Child(Index, Index, bool, Index),
    /// Replace a count or score in `learner_model_param`.
    Header(&'static str, Value),
    /// Cut an array short.
    Truncate(Index, usize),
    /// Remove an object member.
    Delete(Index),
}

fn value_mut() -> impl Strategy<Value = ValueMut> {
    prop_oneof![
        3 => (any::<Index>(), replacement()).prop_map(|(i, v)| ValueMut::Set(i, v)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| ValueMut::Swap(a, b)),
        4 => (any::<Index>(), any::<Index>(), any::<bool>(), any::<Index>())
            .prop_map(|(t, n, l, c)| ValueMut::Child(t, n, l, c)),
        2 => (
            prop::sample::select(vec!["num_feature", "num_class", "num_target", "base_score"]),
            replacement()
        )
            .prop_map(|(k, v)| ValueMut::Header(k, v)),
        1 => (any::<Index>(), 0usize..6).prop_map(|(i, n)| ValueMut::Truncate(i, n)),
        1 => any::<Index>().prop_map(ValueMut::Delete),
    ]
}

/// JSON pointers of the numbers (and strings), arrays and object members in `v`.
#[derive(Default)]
struct Paths {
    numbers: Vec<String>,
    arrays: Vec<String>,
    members: Vec<String>,
}

fn paths(v: &Value) -> Paths {
    let mut p = Paths::default();
    let mut stack = vec![(String::new(), v)];
    while let Some((at, v)) = stack.pop() {
        match v {
            Value::Number(_) | Value::String(_) => p.numbers.push(at),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    stack.push((format!("{at}/{i}"), x));
                }
                p.arrays.push(at);
            }
            Value::Object(m) => {
                for (k, x) in m {
                    let child = format!("{at}/{k}");
                    p.members.push(child.clone());
                    stack.push((child, x));
                }
            }
            _ => {}
        }
    }
    p
}

fn apply(v: &mut Value, m: &ValueMut) {
    let p = paths(v);
    let pick = |list: &[String], i: &Index| -> Option<String> {
        (!list.is_empty()).then(|| list[i.index(list.len())].clone())
    };
    match m {
        ValueMut::Set(i, new) => {
            if let Some(at) = pick(&p.numbers, i) {
                *v.pointer_mut(&at).unwrap() = new.clone();
            }
        }
        ValueMut::Swap(a, b) => {
            if let (Some(a), Some(b)) = (pick(&p.numbers, a), pick(&p.numbers, b)) {
                let x = v.pointer(&a).unwrap().clone();
                let y = std::mem::replace(v.pointer_mut(&b).unwrap(), x);
                *v.pointer_mut(&a).unwrap() = y;
            }
        }
        ValueMut::Child(t, n, left, c) => {
            let Some(trees) = v
                .pointer_mut("/learner/gradient_booster/model/trees")
                .and_then(Value::as_array_mut)
            else {
                return;
            };
            if trees.is_empty() {
                return;
            }
            let k = t.index(trees.len());
            let key = if *left {
                "left_children"
            } else {
                "right_children"
            };
            if let Some(a) = trees[k][key].as_array_mut()
                && !a.is_empty()
            {
                let len = a.len();
                // -2 ..= len + 1: leaves, every node, and just out of range.
                let child = c.index(len + 4) as i64 - 2;
                a[n.index(len)] = child.into();
            }
        }
        ValueMut::Header(key, new) => {
            if let Some(h) = v.pointer_mut("/learner/learner_model_param") {
                h[*key] = new.clone();
            }
        }
        ValueMut::Truncate(i, len) => {
            if let Some(at) = pick(&p.arrays, i)
                && let Some(a) = v.pointer_mut(&at).and_then(Value::as_array_mut)
            {
                a.truncate(*len);
            }
        }
        ValueMut::Delete(i) => {
            if let Some(at) = pick(&p.members, i) {
                let (parent, key) = at.rsplit_once('/').unwrap();
                if let Some(o) = v.pointer_mut(parent).and_then(Value::as_object_mut) {
                    o.remove(key);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum ByteMut {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
}

fn byte_mut() -> impl Strategy<Value = ByteMut> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| ByteMut::Flip(i, x)),
        1 => any::<Index>().prop_map(ByteMut::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| ByteMut::Insert(i, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| ByteMut::Remove(i, n)),
    ]
}

fn apply_bytes(b: &mut Vec<u8>, m: &ByteMut) {
    if b.is_empty() {
        return;
    }
    match m {
        ByteMut::Flip(i, x) => {
            let k = i.index(b.len());
            b[k] ^= x;
        }
        ByteMut::Truncate(i) => b.truncate(i.index(b.len())),
        ByteMut::Insert(i, bytes) => {
            let k = i.index(b.len());
            b.splice(k..k, bytes.iter().copied());
        }
        ByteMut::Remove(i, n) => {
            let k = i.index(b.len());
            b.drain(k..(k + n).min(b.len()));
        }
    }
}

/// LightGBM keys whose values a mutation targets (one number of the text at random rarely
/// hits a count).
const LGB_KEYS: &[&str] = &[
    "num_leaves",
    "num_cat",
    "left_child",
    "right_child",
    "split_feature",
    "decision_type",
    "threshold",
    "leaf_value",
    "cat_boundaries",
    "cat_threshold",
    "max_feature_idx",
    "num_class",
    "num_tree_per_iteration",
];

#[derive(Debug, Clone)]
enum TextMut {
    /// Replace one number of the text.
    Token(Index, String),
    /// In an occurrence of `key=`, replace one item of its list (or, without items, its
    /// whole value).
    Field(&'static str, Index, Index, String),
    /// Exchange two numbers (e.g. two child indices).
    Swap(Index, Index),
    DeleteLine(Index),
    DuplicateLine(Index),
    Truncate(Index),
}

fn text_mut() -> impl Strategy<Value = TextMut> {
    prop_oneof![
        4 => (any::<Index>(), num_token()).prop_map(|(i, t)| TextMut::Token(i, t)),
        4 => (prop::sample::select(LGB_KEYS), any::<Index>(), any::<Index>(), num_token())
            .prop_map(|(k, o, i, t)| TextMut::Field(k, o, i, t)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TextMut::Swap(a, b)),
        1 => any::<Index>().prop_map(TextMut::DeleteLine),
        1 => any::<Index>().prop_map(TextMut::DuplicateLine),
        1 => any::<Index>().prop_map(TextMut::Truncate),
    ]
}

/// Byte ranges of the numbers in `text` (runs of digits, signs, dots and exponents).
fn number_tokens(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let is_num = |c: u8| c.is_ascii_digit() || b"+-.eE".contains(&c);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_num(b[i]) && (i == 0 || !b[i - 1].is_ascii_alphabetic()) {
            let start = i;
            while i < b.len() && is_num(b[i]) {
                i += 1;
            }
            if b[start..i].iter().any(u8::is_ascii_digit) {
                out.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    out
}

fn apply_text(text: &mut String, m: &TextMut) {
    let tokens = number_tokens(text);
    match m {
        TextMut::Token(i, new) => {
            if !tokens.is_empty() {
                let (s, e) = tokens[i.index(tokens.len())];
                text.replace_range(s..e, new);
            }
        }
        TextMut::Field(key, occurrence, item, new) => {
            let prefix = format!("{key}=");
            let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
            let hits: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].starts_with(&prefix))
                .collect();
            if hits.is_empty() {
                return;
            }
            let line = &mut lines[hits[occurrence.index(hits.len())]];
            let mut items: Vec<String> = line[prefix.len()..]
                .split(' ')
                .map(str::to_string)
                .collect();
            if items.len() > 1 {
                let k = item.index(items.len());
                items[k] = new.clone();
            } else {
                items = vec![new.clone()];
            }
            *line = format!("{prefix}{}", items.join(" "));
            *text = lines.join("\n");
        }
        TextMut::Swap(a, b) => {
            if !tokens.is_empty() {
                let (mut x, mut y) = (tokens[a.index(tokens.len())], tokens[b.index(tokens.len())]);
                if x.0 > y.0 {
                    std::mem::swap(&mut x, &mut y);
                }
                if x != y {
                    let (tx, ty) = (text[x.0..x.1].to_string(), text[y.0..y.1].to_string());
                    text.replace_range(y.0..y.1, &tx);
                    text.replace_range(x.0..x.1, &ty);
                }
            }
        }
        TextMut::DeleteLine(i) | TextMut::DuplicateLine(i) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let k = i.index(lines.len());
            if matches!(m, TextMut::DeleteLine(_)) {
                lines.remove(k);
            } else {
                lines.insert(k, lines[k]);
            }
            *text = lines.join("\n");
        }
        TextMut::Truncate(i) => {
            // The fixtures are ASCII, so every byte is a character boundary.
            let k = i.index(text.len() + 1);
            text.truncate(k);
        }
    }
}

/// One tree block from LightGBM's grammar: every key once, in LightGBM's order, each list
/// about as long as `num_leaves` asks (sometimes one more or less), children mostly in
/// range, category sets mostly consistent, and any number sometimes hostile.
fn lgb_tree() -> impl Strategy<Value = String> {
    let jitter = prop::sample::select(vec![0i64, 0, 0, 0, -1, 1]);
    (
        0usize..6,
        prop::option::weighted(0.2, num_token()),
        prop::collection::vec(0u32..3, 0..3),
        prop::array::uniform7(jitter),
    )
        .prop_flat_map(|(leaves, leaves_token, cat_sizes, j)| {
            let ni = leaves.saturating_sub(1);
            let len = |n: usize, j: i64| (n as i64 + j).max(0) as usize;
            let list = |n: usize, j: i64, item: BoxedStrategy<String>| {
                prop::collection::vec(item, len(n, j))
            };
            let numbers = || num_token().boxed();
            let children = || {
                prop_oneof![
                    8 => (-(leaves as i64) - 1..=ni as i64).prop_map(|c| c.to_string()),
                    1 => num_token(),
                ]
                .boxed()
            };
            let small = |n: u32| (0..n).prop_map(|x| x.to_string()).boxed();
            // cat_boundaries: 0 then running sums of the set sizes (words per set).
            let bounds: Vec<u32> = std::iter::once(0)
                .chain(cat_sizes.iter().scan(0, |acc, &w| {
                    *acc += w;
                    Some(*acc)
                }))
                .collect();
            let words = bounds.last().copied().unwrap_or(0) as usize;
            (
                Just(leaves_token.unwrap_or_else(|| leaves.to_string())),
                Just(cat_sizes.len()),
                list(ni, j[0], small(4)),
                list(ni, j[1], numbers()),
                list(
                    ni,
                    j[2],
                    prop::sample::select(vec!["0", "1", "2", "8", "9", "10", "255"])
                        .prop_map(str::to_string)
                        .boxed(),
                ),
                list(ni, j[3], children()),
                list(ni, j[4], children()),
                list(leaves, j[5], numbers()),
                Just(bounds),
                list(words, j[6], numbers()),
            )
        })
        .prop_map(
            |(nl, num_cat, feat, thr, dt, left, right, leaf, bounds, cats)| {
                let bounds: Vec<String> = bounds.iter().map(u32::to_string).collect();
                format!(
                    "num_leaves={nl}\nnum_cat={num_cat}\nsplit_feature={}\nthreshold={}\n\
                     decision_type={}\nleft_child={}\nright_child={}\nleaf_value={}\n\
                     leaf_count={}\ninternal_count={}\ncat_boundaries={}\ncat_threshold={}\n\
                     is_linear=0\nshrinkage=1\n",
                    feat.join(" "),
                    thr.join(" "),
                    dt.join(" "),
                    left.join(" "),
                    right.join(" "),
                    leaf.join(" "),
                    vec!["1"; leaf.len()].join(" "),
                    vec!["2"; feat.len()].join(" "),
                    bounds.join(" "),
                    cats.join(" "),
                )
            },
        )
}

/// LightGBM text from its grammar: a header (counts mostly small, sometimes hostile), then
/// up to four tree blocks from [`lgb_tree`].
fn lgb_text() -> impl Strategy<Value = String> {
    let count = || {
        prop_oneof![
            6 => (1usize..5).prop_map(|n| n.to_string()),
            1 => num_token(),
        ]
    };
    let objective = prop::sample::select(vec![
        "objective=binary sigmoid:1",
        "objective=multiclass num_class:3",
        "objective=regression",
        "objective=poisson",
        "objective=lambdarank",
        "",
    ]);
    (
        count(),
        count(),
        prop::option::of(count()),
        objective,
        prop::collection::vec(lgb_tree(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(mfi, classes, per_iter, objective, trees, average)| {
            let mut s = format!("tree\nversion=v4\nnum_class={classes}\nmax_feature_idx={mfi}\n");
            if let Some(p) = per_iter {
                s += &format!("num_tree_per_iteration={p}\n");
            }
            s += objective;
            s.push('\n');
            if average {
                s += "average_output\n";
            }
            for (i, t) in trees.iter().enumerate() {
                s += &format!("\nTree={i}\n{t}");
            }
            s += "\nend of trees\n";
            s
        })
}

// ---------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in prop::sample::select(vec![&b""[..], b"{", b"[", b"{U\x07learner{", b"tree\n"]),
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let bytes = [prefix, &body[..]].concat();
        for format in [ModelFormat::XgboostJson, ModelFormat::XgboostUbj, ModelFormat::Lightgbm] {
            exercise(&bytes, format)?;
        }
    }

    #[test]
    fn lightgbm_grammar_never_panics(text in lgb_text()) {
        exercise(text.as_bytes(), ModelFormat::Lightgbm)?;
    }

    #[test]
    fn mutated_xgboost_models_never_panic(
        base in any::<Index>(),
        muts in prop::collection::vec(value_mut(), 1..4),
    ) {
        let bases = xgb_bases();
        let mut v = bases[base.index(bases.len())].clone();
        for m in &muts {
            apply(&mut v, m);
        }
        exercise(&serde_json::to_vec(&v).unwrap(), ModelFormat::XgboostJson)?;
        exercise(&to_ubj(&v), ModelFormat::XgboostUbj)?;
    }

    #[test]
    fn byte_mutated_xgboost_files_never_panic(
        ubj_file in any::<bool>(),
        muts in prop::collection::vec(byte_mut(), 1..5),
    ) {
        // The real UBJSON fixture (XGBoost's own encoding) or a small JSON model.
        let (mut bytes, format) = if ubj_file {
            (fixture("xgb_binary_logistic.ubj"), ModelFormat::XgboostUbj)
        } else {
            (
                serde_json::to_vec(&xgb_base("xgb_binary_logistic.json")).unwrap(),
                ModelFormat::XgboostJson,
            )
        };
        for m in &muts {
            apply_bytes(&mut bytes, m);
        }
        exercise(&bytes, format)?;
    }

    #[test]
    fn mutated_lightgbm_models_never_panic(
        base in any::<Index>(),
        muts in prop::collection::vec(text_mut(), 1..4),
        flips in prop::collection::vec(byte_mut(), 0..2),
    ) {
        let bases = lgb_bases();
        let mut text = bases[base.index(bases.len())].clone();
        for m in &muts {
            apply_text(&mut text, m);
        }
        let mut bytes = text.into_bytes();
        for m in &flips {
            apply_bytes(&mut bytes, m);
        }
        exercise(&bytes, ModelFormat::Lightgbm)?;
    }
}
