//! Text models served end to end: all-MiniLM-L6-v2 (`bert-embedding`, weights from the model
//! cache the README's test command fills) and a tiny DistilBERT classifier the test builds,
//! over KServe V2 REST and gRPC (BYTES in) and the typed TextEmbedding / Categorizer services.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use infermesh_proto::inference as v2;
use infermesh_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use infermesh_proto::v1 as pb;
use infermesh_proto::v1::categorizer_client::CategorizerClient;
use infermesh_proto::v1::text_embedding_client::TextEmbeddingClient;
use infermesh_text::{SentenceEncoder, TextClassifier, TextModel, cosine};
use serde_json::{Value, json};
use tonic::Code;

const LABELS: [&str; 3] = ["groceries", "transport", "salary"];

/// A 1-layer DistilBERT classifier with random (seeded by candle's init) weights, written in
/// the Hugging Face layout with MiniLM's tokenizer.
fn write_tiny_classifier(dir: &Path) -> TextClassifier {
    std::fs::create_dir_all(dir).unwrap();
    let config = json!({
        "architectures": ["DistilBertForSequenceClassification"],
        "model_type": "distilbert",
        "vocab_size": 30522, "dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64,
        "activation": "gelu", "max_position_embeddings": 512, "initializer_range": 0.02,
        "pad_token_id": 0,
        "id2label": {"0": LABELS[0], "1": LABELS[1], "2": LABELS[2]},
        "label2id": {LABELS[0]: 0, LABELS[1]: 1, LABELS[2]: 2},
    });
    let config = serde_json::to_vec(&config).unwrap();
    std::fs::write(dir.join("config.json"), &config).unwrap();
    std::fs::copy(
        common::minilm_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let model = TextClassifier::from_parts(&config, vb, tokenizer).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();
    model
}

/// A repository with `minilm` (bert-embedding, files linked from the cache), `categorizer`
/// (the tiny classifier) and the sample fraud model.
fn text_repo(extra_minilm_config: &str) -> (tempfile::TempDir, TextClassifier) {
    let d = common::sample_repo();
    let m = d.path().join("minilm");
    std::fs::create_dir_all(m.join("1")).unwrap();
    std::fs::write(
        m.join("config.toml"),
        format!("platform = \"bert-embedding\"\n{extra_minilm_config}"),
    )
    .unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling",
    ] {
        std::os::unix::fs::symlink(common::minilm_dir().join(f), m.join("1").join(f)).unwrap();
    }
    let c = d.path().join("categorizer");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("config.toml"),
        "platform = \"distilbert-classifier\"\nmax_batch_tokens = 256\n",
    )
    .unwrap();
    let model = write_tiny_classifier(&c.join("1"));
    (d, model)
}

/// The classifier's own logits for `texts`, without the server.
fn direct_logits(model: &TextClassifier, texts: &[&str]) -> Vec<Vec<f32>> {
    let ids = model.tokenize(texts).unwrap();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    model.forward_tokens(&refs).unwrap()
}

const PAIR: [&str; 3] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_over_v2_rest_grpc_and_typed_equal_the_encoder() {
    let (repo, _) = text_repo("");
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let enc = SentenceEncoder::load(&common::minilm_dir()).unwrap();
    let want = enc.embed(&PAIR).unwrap();
    let base = format!("http://{}", s.http_addr);

    // Metadata: BYTES text in, FP32 [-1, 384] embedding out.
    let meta = common::get_json(&format!("{base}/v2/models/minilm")).await;
    assert_eq!(meta["platform"], "bert-embedding");
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "text", "datatype": "BYTES", "shape": [-1]})
    );
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "embedding", "datatype": "FP32", "shape": [-1, 384]})
    );
    // The default engine ("auto") is OpenVINO on a CPU with native bf16, ONNX Runtime
    // elsewhere (the test script installs both libraries); the DistilBERT categoriser stays on
    // candle.
    let config = common::get_json(&format!("{base}/v2/models/minilm/config")).await;
    let auto = if infermesh_text::openvino::runtime().unwrap().bf16 {
        "openvino"
    } else {
        "onnxruntime"
    };
    assert_eq!(config["backend"], auto, "{config}");
    let config = common::get_json(&format!("{base}/v2/models/categorizer/config")).await;
    assert_eq!(config["backend"], "candle", "{config}");

    // REST JSON.
    let resp = v2_texts(&format!("{base}/v2/models/minilm/infer"), &PAIR).await;
    let out = &resp["outputs"][0];
    assert_eq!(out["name"], "embedding");
    assert_eq!(out["shape"], json!([3, 384]));
    let got: Vec<f32> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    for (i, w) in want.iter().enumerate() {
        let g = &got[i * 384..(i + 1) * 384];
        assert!(cosine(g, w) >= 0.9999, "text {i}");
    }
    let c01 = cosine(&got[..384], &got[384..768]);
    let c02 = cosine(&got[..384], &got[768..]);
    assert!((c01 - 0.7553).abs() < 0.01, "{c01}");
    assert!((c02 + 0.1050).abs() < 0.01, "{c02}");

    // gRPC with raw BYTES contents (u32 length-prefixed), as tritonclient sends them.
    let mut g = GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let raw = common::raw_bytes(&PAIR);
    let r = g
        .model_infer(v2::ModelInferRequest {
            model_name: "minilm".into(),
            inputs: vec![v2::model_infer_request::InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![3, 1],
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs[0].shape, vec![3, 384]);
    let floats: Vec<f32> = r.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(cosine(&floats[768..], &want[2]) >= 0.9999);

    // Typed, with concurrent callers batched together: each gets its own texts' vectors.
    let client = TextEmbeddingClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let texts = vec![PAIR[i % 3].to_string(), PAIR[(i + 1) % 3].to_string()];
            let r = c
                .embed(pb::EmbedRequest {
                    texts,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (i, r)
        }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(
            (r.model_name.as_str(), r.model_version.as_str()),
            ("minilm", "1")
        );
        assert_eq!(r.dimensions, 384);
        assert!(cosine(&r.embeddings[0].values, &want[i % 3]) >= 0.9999);
        assert!(cosine(&r.embeddings[1].values, &want[(i + 1) % 3]) >= 0.9999);
    }
    s.shutdown().await.unwrap();
}

/// A classifier with `lexical.json` / `lexical.safetensors` beside its weights serves the
/// blend of the two models, over the typed API and V2 alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifier_with_a_lexical_head_serves_the_blend() {
    use infermesh_text::lexical::{LexicalHead, TfIdf};
    let (repo, model) = text_repo("");
    let texts = ["WOOLWORTHS FOOD 0231", "UBER TRIP", "ACME PAYROLL SALARY"];
    // A head that reads each text's n-grams as evidence for its own label (in LABELS order).
    let tfidf = TfIdf::fit(TfIdf::default_blocks(), &texts).unwrap();
    let v = tfidf.len();
    let mut weight = vec![0f32; 3 * v];
    for (c, text) in texts.iter().enumerate() {
        for (j, x) in tfidf.transform(text) {
            weight[c * v + j as usize] = 8.0 * x;
        }
    }
    let labels: Vec<String> = LABELS.iter().map(|l| l.to_string()).collect();
    let head = LexicalHead::new(tfidf, labels, &weight, vec![0.0; 3], 0.5, None).unwrap();
    head.save(&repo.path().join("categorizer").join("1"))
        .unwrap();
    let s = common::start(repo.path(), 0.0, 1 << 20).await;

    let raw = direct_logits(&model, &texts);
    let mut c = CategorizerClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let r = c
        .classify(pb::ClassifyRequest {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for (i, (res, logits)) in r.results.iter().zip(&raw).enumerate() {
        let mut blended = logits.clone();
        head.blend(&mut blended, texts[i]);
        // The head's evidence for each text's own label decides, whatever the random
        // classifier (unseeded, sometimes confident) says alone.
        assert_eq!(res.label, LABELS[i]);
        assert!((res.probability - blended[i].exp()).abs() < 1e-5, "{res:?}");
        let alone = infermesh_text::classifier::softmax(logits)[i];
        assert!(res.probability > 0.9, "{res:?}");
        assert!(res.probability - alone > 1e-3, "{res:?} vs {alone}");
    }

    // V2 REST: the logits output carries the blended log-probabilities.
    let resp = v2_texts(
        &format!("http://{}/v2/models/categorizer/infer", s.http_addr),
        &texts,
    )
    .await;
    let mut blended = raw[1].clone();
    head.blend(&mut blended, texts[1]);
    let logits = &resp["outputs"][1]["data"];
    for (k, want) in blended.iter().enumerate() {
        let got = logits[3 + k].as_f64().unwrap() as f32;
        assert!((got - want).abs() < 1e-4, "{resp}");
    }
    assert_eq!(resp["outputs"][2]["data"][1], "transport");
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifier_serves_labels_and_probabilities() {
    let (repo, model) = text_repo("");
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let texts = [
        "WOOLWORTHS FOOD 0231",
        "UBER TRIP HELP.UBER.COM",
        "ACME PAYROLL SALARY",
    ];
    let logits = direct_logits(&model, &texts);

    let mut c = CategorizerClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let r = c
        .classify(pb::ClassifyRequest {
            texts: texts.iter().map(|t| t.to_string()).collect(),
            top_k: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.model_name.as_str(), r.model_version.as_str()),
        ("categorizer", "1")
    );
    for (res, l) in r.results.iter().zip(&logits) {
        let p = infermesh_text::classifier::softmax(l);
        let best = infermesh_text::classifier::argmax(&p);
        assert_eq!(res.label, LABELS[best]);
        assert!((res.probability - p[best]).abs() < 1e-5);
        assert_eq!(res.probabilities.len(), 2);
        assert!(res.probabilities[0].probability >= res.probabilities[1].probability);
    }

    // V2 REST: probabilities, logits and the BYTES label.
    let resp = v2_texts(
        &format!("http://{}/v2/models/categorizer/infer", s.http_addr),
        &texts,
    )
    .await;
    let outs = resp["outputs"].as_array().unwrap();
    let names: Vec<&str> = outs.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["probabilities", "logits", "label"]);
    assert_eq!(outs[2]["datatype"], "BYTES");
    assert_eq!(outs[2]["data"][0], json!(r.results[0].label));
    let l0 = outs[1]["data"][0].as_f64().unwrap() as f32;
    assert!((l0 - logits[0][0]).abs() < 1e-4);

    // The classifier is not an embedding model, and the embedding model is not a classifier.
    let mut e = TextEmbeddingClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let err = e
        .embed(pb::EmbedRequest {
            texts: vec!["x".into()],
            model_name: "categorizer".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .classify(pb::ClassifyRequest {
            texts: vec!["x".into()],
            model_name: "minilm".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_text_requests_get_clear_errors() {
    // A tiny token budget: one long text is more than the whole admission capacity.
    let (repo, _) = text_repo(
        "max_batch_tokens = 64\nmax_queue_tokens = 64\nmax_client_batch_size = 4\nengine = \"candle\"\n",
    );
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let mut e = TextEmbeddingClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let embed = |texts: Vec<String>, model: &str| pb::EmbedRequest {
        texts,
        model_name: model.into(),
        ..Default::default()
    };
    let long = "word ".repeat(200);
    let err = e.embed(embed(vec![long], "")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let err = e.embed(embed(vec!["a".into(); 5], "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("max_client_batch_size"));
    let err = e.embed(embed(vec!["a".into()], "ghost")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = e.embed(embed(vec!["a".into()], "fraud")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Texts that fit still work after the refusals, and an empty request is an empty answer.
    let ok = e
        .embed(embed(vec!["fine".into()], ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.embeddings[0].values.len(), 384);
    let empty = e.embed(embed(vec![], "")).await.unwrap().into_inner();
    assert!(empty.embeddings.is_empty());

    // V2: numeric data for a text model, non-UTF-8 bytes, unknown outputs.
    let http = reqwest::Client::new();
    let url = format!("http://{}/v2/models/minilm/infer", s.http_addr);
    for (body, needle) in [
        (
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
            "BYTES",
        ),
        (
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                   "outputs": [{"name": "logits"}]}),
            "unknown output",
        ),
        (
            json!({"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}),
            "input",
        ),
    ] {
        let r = http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }
    let raw = common::raw_bytes(&[[0xffu8, 0xfe]]);
    let mut g = GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let err = g
        .model_infer(v2::ModelInferRequest {
            model_name: "minilm".into(),
            inputs: vec![v2::model_infer_request::InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("UTF-8"));
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_are_ranked_with_a_breakdown() {
    use infermesh_proto::v1::resume_matcher_client::ResumeMatcherClient;
    let (repo, _) = text_repo("");
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let mut c = ResumeMatcherClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let jd = "Senior backend engineer. We need 5+ years of experience building services in \
              Python and Go, running on Kubernetes, with PostgreSQL and Redis. CI/CD with Jenkins.";
    let text = |id: &str, t: &str| pb::Resume {
        id: id.into(),
        content: Some(pb::resume::Content::Text(t.into())),
    };
    let strong = "Senior software engineer with 7 years of experience. Built Python and Go \
                  microservices deployed on Kubernetes; PostgreSQL and Redis in production; \
                  CI/CD pipelines in Jenkins.";
    let weak = "Pastry chef with 3 years of experience in French bakeries, cakes and bread.";
    let partial = "Junior developer, 1 year of experience writing Python scripts and SQL reports.";
    let r = c
        .rank(pb::RankRequest {
            job_description: jd.into(),
            resumes: vec![
                text("weak", weak),
                pb::Resume {
                    id: "strong".into(),
                    // An upload of plain UTF-8 text goes through the document reader.
                    content: Some(pb::resume::Content::Document(strong.as_bytes().to_vec())),
                },
                text("partial", partial),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model_name, "minilm");
    let ids: Vec<&str> = r.candidates.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["strong", "partial", "weak"], "{r:?}");
    let best = &r.candidates[0];
    assert_eq!(best.document_type, "text");
    for skill in ["Python", "Kubernetes", "PostgreSQL"] {
        assert!(
            r.required_skills.iter().any(|s| s.contains(skill)),
            "{skill} not in {:?}",
            r.required_skills
        );
        assert!(
            best.matched_skills.iter().any(|s| s.contains(skill)),
            "{best:?}"
        );
    }
    assert!(best.missing_skills.len() < r.candidates[2].missing_skills.len());
    assert_eq!(best.required_years, Some(5.0));
    assert_eq!(best.resume_years, Some(7.0));
    assert!(best.semantic > r.candidates[2].semantic);
    assert!((0.0..=1.0).contains(&best.score));

    // top_k, and bad uploads or requests are INVALID_ARGUMENT naming the resume.
    let one = c
        .rank(pb::RankRequest {
            job_description: jd.into(),
            resumes: vec![text("a", strong), text("b", weak)],
            top_k: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.candidates.len(), 1);
    let bad = |resumes: Vec<pb::Resume>, jd: &str| pb::RankRequest {
        job_description: jd.into(),
        resumes,
        ..Default::default()
    };
    let corrupt = pb::Resume {
        id: "scan".into(),
        content: Some(pb::resume::Content::Document(
            b"%PDF-1.4\n%\xe2\xe3 not really a pdf".to_vec(),
        )),
    };
    let err = c.rank(bad(vec![corrupt], jd)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("scan"), "{err:?}");
    let binary = pb::Resume {
        id: "bin".into(),
        content: Some(pb::resume::Content::Document(vec![0xff, 0x00, 0xfe, 0x01])),
    };
    assert_eq!(
        c.rank(bad(vec![binary], jd)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.rank(bad(vec![text("a", strong)], " "))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        c.rank(bad(vec![], jd)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    s.shutdown().await.unwrap();
}

/// A V2 REST inference request with `texts` as the BYTES input `text` `[n]`: the JSON answer.
async fn v2_texts(url: &str, texts: &[&str]) -> Value {
    let body = json!({"inputs": [
        {"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}
    ]});
    common::post_json(url, &body).await
}

/// POSTs `body` to `url`: the status and the JSON answer.
async fn post_json(http: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let r = http.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tei_and_openai_routes_embed_and_classify() {
    let (repo, classifier) = text_repo("");
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let enc = SentenceEncoder::load(&common::minilm_dir()).unwrap();
    let want = enc.embed(&PAIR).unwrap();
    let ids = enc.tokenize(&PAIR).unwrap();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let raw_want = enc.forward_tokens(&refs).unwrap();
    let http = reqwest::Client::new();
    let embed = format!("http://{}/embed", s.http_addr);

    // TEI /embed: one text or a list; unit vectors by default, the pooled ones on request.
    let (st, one) = post_json(&http, &embed, json!({"inputs": PAIR[0]})).await;
    assert_eq!(st, 200, "{one}");
    assert_eq!(one.as_array().unwrap().len(), 1);
    let got = floats(&one[0]);
    assert_eq!(got.len(), 384);
    assert!((norm(&got) - 1.0).abs() < 1e-4);
    assert!(cosine(&got, &want[0]) >= 0.9999);
    let (st, raw) = post_json(&http, &embed, json!({"inputs": PAIR, "normalize": false})).await;
    assert_eq!(st, 200, "{raw}");
    for (i, row) in raw.as_array().unwrap().iter().enumerate() {
        let got = floats(row);
        // MiniLM's mean-pooled vectors are not unit length; the served ones keep their norm.
        assert!(
            (norm(&raw_want[i]) - 1.0).abs() > 0.05,
            "{}",
            norm(&raw_want[i])
        );
        assert!(
            (norm(&got) / norm(&raw_want[i]) - 1.0).abs() < 1e-2,
            "{} vs {}",
            norm(&got),
            norm(&raw_want[i])
        );
        assert!(cosine(&got, &want[i]) >= 0.9999);
    }
    // Token ids in give what the text gives.
    let (st, by_ids) = post_json(&http, &embed, json!({"inputs": ids[1]})).await;
    assert_eq!(st, 200, "{by_ids}");
    assert!(cosine(&floats(&by_ids[0]), &want[1]) >= 0.9999);

    // Truncation: on by default (as TEI with --auto-truncate); off refuses, naming the length.
    let long = "word ".repeat(600);
    let (st, _) = post_json(&http, &embed, json!({"inputs": long})).await;
    assert_eq!(st, 200);
    let (st, err) = post_json(
        &http,
        &embed,
        json!({"inputs": ["short", long], "truncate": false}),
    )
    .await;
    assert_eq!(st, 400, "{err}");
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("text 1 has 602 tokens") && msg.contains("at most 512"),
        "{msg}"
    );
    let (st, err) = post_json(
        &http,
        &embed,
        json!({"inputs": vec![101u32; 513], "truncate": false}),
    )
    .await;
    assert_eq!(st, 400, "{err}");

    // Cutting on the left keeps a long text's end: 50 words then 510 more, each one token, is
    // the last 510 words between [CLS] and [SEP] (512, the maximum), which is what the tail
    // alone gives; on the right it is the head.
    let head = "banana ".repeat(50);
    let tail = vec!["word"; 510].join(" ");
    let tail_want = enc.embed(&[tail.as_str()]).unwrap().remove(0);
    assert_eq!(enc.tokenize(&[tail.as_str()]).unwrap()[0].len(), 512);
    let head_tail = format!("{head}{tail}");
    let (st, left) = post_json(
        &http,
        &embed,
        json!({"inputs": head_tail, "truncation_direction": "Left"}),
    )
    .await;
    assert_eq!(st, 200, "{left}");
    assert!(cosine(&floats(&left[0]), &tail_want) >= 0.9999);
    let (st, right) = post_json(
        &http,
        &embed,
        json!({"inputs": head_tail, "truncation_direction": "right"}),
    )
    .await;
    assert_eq!(st, 200, "{right}");
    let head_want = enc.embed(&[head_tail.as_str()]).unwrap().remove(0);
    assert!(cosine(&floats(&right[0]), &head_want) >= 0.9999);
    assert!(cosine(&head_want, &tail_want) < 0.9, "the two cuts differ");
    // Token ids are cut the same way: the last 512 of them.
    let long_ids: Vec<u32> = (0..600).map(|i| 1000 + i).collect();
    let (st, left_ids) = post_json(
        &http,
        &embed,
        json!({"inputs": long_ids, "truncation_direction": "Left"}),
    )
    .await;
    assert_eq!(st, 200, "{left_ids}");
    let ids_want = enc.forward_tokens(&[&long_ids[88..]]).unwrap().remove(0);
    assert!(cosine(&floats(&left_ids[0]), &ids_want) >= 0.9999);

    // What is not supported, or not there, is a clear error.
    for (body, status, needle) in [
        (json!({"inputs": [[101, 999_999, 102]]}), 400, "vocabulary"),
        (json!({"inputs": [[]]}), 400, "empty"),
        (
            json!({"inputs": "x", "truncation_direction": "Middle"}),
            400,
            "truncation_direction",
        ),
        (
            json!({"inputs": "x", "prompt_name": "query"}),
            400,
            "prompt",
        ),
        (json!({"inputs": "x", "dimensions": 128}), 400, "Matryoshka"),
        (
            json!({"inputs": "x", "model": "categorizer"}),
            400,
            "classifier",
        ),
        (json!({"inputs": "x", "model": "ghost"}), 404, "ghost"),
        (json!({"inputs": 5}), 400, "invalid request body"),
        (json!({"texts": ["x"]}), 400, "inputs"),
    ] {
        let (st, err) = post_json(&http, &embed, body.clone()).await;
        assert_eq!(st, status, "{body} -> {err}");
        assert!(
            err["error"].as_str().unwrap().contains(needle),
            "{body} -> {err}"
        );
    }
    let (st, ok) = post_json(&http, &embed, json!({"inputs": "x", "dimensions": 384})).await;
    assert_eq!(st, 200, "{ok}");

    // TEI /tokenize: the ids the model sees, with the byte spans of the input they cover.
    let tokenize = format!("http://{}/tokenize", s.http_addr);
    let text = "Hello,  world";
    let (st, toks) = post_json(&http, &tokenize, json!({"inputs": text})).await;
    assert_eq!(st, 200, "{toks}");
    let toks = toks[0].as_array().unwrap();
    let want_ids = enc.tokenize(&[text]).unwrap().remove(0);
    let got_ids: Vec<u64> = toks.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(
        got_ids,
        want_ids.iter().map(|&i| i as u64).collect::<Vec<_>>()
    );
    assert_eq!(toks[0]["text"], "[CLS]");
    assert_eq!(toks[0]["special"], true);
    assert!(toks[0]["start"].is_null());
    for t in &toks[1..toks.len() - 1] {
        let (a, b) = (t["start"].as_u64().unwrap(), t["stop"].as_u64().unwrap());
        assert_eq!(t["text"], text[a as usize..b as usize], "{t}");
    }
    assert_eq!(toks[3]["text"], "world");
    assert_eq!(
        (toks[3]["start"].as_u64(), toks[3]["stop"].as_u64()),
        (Some(8), Some(13))
    );
    let (st, bare) = post_json(
        &http,
        &tokenize,
        json!({"inputs": ["a", "b c"], "add_special_tokens": false}),
    )
    .await;
    assert_eq!(st, 200, "{bare}");
    assert_eq!(
        (
            bare[0].as_array().unwrap().len(),
            bare[1].as_array().unwrap().len()
        ),
        (1, 2)
    );

    // TEI /predict on the default categoriser: labels by score, softmax or raw logits.
    let predict = format!("http://{}/predict", s.http_addr);
    let texts = ["WOOLWORTHS FOOD 0231", "UBER TRIP HELP.UBER.COM"];
    let cids = classifier.tokenize(&texts).unwrap();
    let crefs: Vec<&[u32]> = cids.iter().map(Vec::as_slice).collect();
    let logits = classifier.forward_tokens(&crefs).unwrap();
    let (st, single) = post_json(&http, &predict, json!({"inputs": texts[0]})).await;
    assert_eq!(st, 200, "{single}");
    let p = infermesh_text::classifier::softmax(&logits[0]);
    let best = infermesh_text::classifier::argmax(&p);
    assert_eq!(single.as_array().unwrap().len(), 3);
    assert_eq!(single[0]["label"], LABELS[best]);
    assert!((single[0]["score"].as_f64().unwrap() as f32 - p[best]).abs() < 1e-5);
    assert!(single[0]["score"].as_f64() >= single[1]["score"].as_f64());
    let (st, batch) = post_json(
        &http,
        &predict,
        json!({"inputs": texts, "raw_scores": true}),
    )
    .await;
    assert_eq!(st, 200, "{batch}");
    for (i, l) in logits.iter().enumerate() {
        let top = l.iter().copied().fold(f32::MIN, f32::max);
        assert!((batch[i][0]["score"].as_f64().unwrap() as f32 - top).abs() < 1e-4);
    }
    for (body, needle) in [
        (json!({"inputs": [["a", "b"]]}), "pairs"),
        (json!({"inputs": "x", "model": "minilm"}), "classifier"),
    ] {
        let (st, err) = post_json(&http, &predict, body.clone()).await;
        assert_eq!(st, 400, "{body} -> {err}");
        assert!(
            err["error"].as_str().unwrap().contains(needle),
            "{body} -> {err}"
        );
    }

    // OpenAI /v1/embeddings: routed by model, usage in tokens, float or base64.
    let openai = format!("http://{}/v1/embeddings", s.http_addr);
    let (st, r) = post_json(&http, &openai, json!({"input": PAIR, "model": "minilm"})).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["object"].as_str(), r["model"].as_str()),
        (Some("list"), Some("minilm"))
    );
    let tokens: usize = ids.iter().map(Vec::len).sum();
    assert_eq!(r["usage"]["prompt_tokens"], tokens);
    assert_eq!(r["usage"]["total_tokens"], tokens);
    for (i, d) in r["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            (d["object"].as_str(), d["index"].as_u64()),
            (Some("embedding"), Some(i as u64))
        );
        assert!(cosine(&floats(&d["embedding"]), &want[i]) >= 0.9999);
    }
    let (st, b64) = post_json(
        &http,
        &openai,
        json!({"input": PAIR[2], "model": "", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(st, 200, "{b64}");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // The same one-text request as floats: the two encodings carry the same values (a batch of
    // three may differ in the last bits on engines whose kernels depend on the batch shape).
    let (st, single) = post_json(&http, &openai, json!({"input": PAIR[2], "model": ""})).await;
    assert_eq!(st, 200, "{single}");
    assert_eq!(decoded, floats(&single["data"][0]["embedding"]));
    assert!(cosine(&decoded, &want[2]) >= 0.9999);
    for (body, status, needle) in [
        (json!({"input": "x", "model": "ghost"}), 404, "ghost"),
        (
            json!({"input": "x", "encoding_format": "hex"}),
            400,
            "encoding_format",
        ),
        (json!({"input": "x", "dimensions": 3}), 400, "dimensions"),
        (json!({"input": "x", "model": "fraud"}), 400, "text"),
    ] {
        // OpenAI's error shape, which its clients read the message from.
        let (st, err) = post_json(&http, &openai, body.clone()).await;
        assert_eq!(st, status, "{body} -> {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body} -> {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }

    // The typed service takes the same options and reports the tokens.
    let mut e = TextEmbeddingClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let r = e
        .embed(pb::EmbedRequest {
            texts: PAIR.iter().map(|t| t.to_string()).collect(),
            normalize: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.prompt_tokens as usize, tokens);
    assert!((norm(&r.embeddings[0].values) / norm(&raw_want[0]) - 1.0).abs() < 1e-2);
    let err = e
        .embed(pb::EmbedRequest {
            texts: vec![long.clone()],
            truncate: Some(false),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("602 tokens"), "{err:?}");

    // Requests are counted under their protocol.
    let metrics = common::metrics_text(&s).await;
    for protocol in ["tei", "openai"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("infermesh_inference_requests_total")
                    && l.contains(&format!("protocol=\"{protocol}\""))
                    && l.contains("outcome=\"ok\"")),
            "{protocol}"
        );
    }
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_parameters_set_normalize_and_truncate() {
    let (repo, _) = text_repo("");
    let s = common::start(repo.path(), 0.0, 1 << 20).await;
    let enc = SentenceEncoder::load(&common::minilm_dir()).unwrap();
    let ids = enc.tokenize(&PAIR[..1]).unwrap();
    let raw_want = enc.forward_tokens(&[ids[0].as_slice()]).unwrap().remove(0);
    let http = reqwest::Client::new();
    let url = format!("http://{}/v2/models/minilm/infer", s.http_addr);
    let body = |text: &str, parameters: Value| {
        json!({"parameters": parameters,
               "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]})
    };
    // REST: the pooled vector on request, unit length by default.
    let (st, r) = post_json(&http, &url, body(PAIR[0], json!({"normalize": false}))).await;
    assert_eq!(st, 200, "{r}");
    let got = floats(&r["outputs"][0]["data"]);
    assert!((norm(&got) / norm(&raw_want) - 1.0).abs() < 1e-2);
    let (st, r) = post_json(&http, &url, body(PAIR[0], json!({}))).await;
    assert_eq!(st, 200, "{r}");
    assert!((norm(&floats(&r["outputs"][0]["data"])) - 1.0).abs() < 1e-4);
    // Truncation off refuses the long text; a parameter of the wrong type is a clear 400.
    let long = "word ".repeat(600);
    let (st, r) = post_json(&http, &url, body(&long, json!({"truncate": false}))).await;
    assert_eq!(st, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("602 tokens"), "{r}");
    let (st, r) = post_json(&http, &url, body(&long, json!({"truncate": "no"}))).await;
    assert_eq!(st, 400, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("'truncate' must be a boolean"),
        "{r}"
    );
    let (st, _) = post_json(&http, &url, body(&long, json!({}))).await;
    assert_eq!(st, 200);

    // gRPC: the same through InferParameter.
    let mut g = GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc_addr))
        .await
        .unwrap();
    let request = |text: &str, key: &str, value: v2::infer_parameter::ParameterChoice| {
        v2::ModelInferRequest {
            model_name: "minilm".into(),
            inputs: vec![v2::model_infer_request::InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                contents: Some(v2::InferTensorContents {
                    bytes_contents: vec![text.as_bytes().to_vec()],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            parameters: [(
                key.to_string(),
                v2::InferParameter {
                    parameter_choice: Some(value),
                },
            )]
            .into(),
            ..Default::default()
        }
    };
    use v2::infer_parameter::ParameterChoice as C;
    let err = g
        .model_infer(request(&long, "truncate", C::BoolParam(false)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("602 tokens"), "{err:?}");
    let err = g
        .model_infer(request(&long, "normalize", C::Int64Param(0)))
        .await
        .unwrap_err();
    assert!(err.message().contains("not an integer"), "{err:?}");
    let r = g
        .model_infer(request(PAIR[0], "normalize", C::BoolParam(false)))
        .await
        .unwrap()
        .into_inner();
    let got = &r.outputs[0].contents.as_ref().unwrap().fp32_contents;
    assert!((norm(got) / norm(&raw_want) - 1.0).abs() < 1e-2);
    s.shutdown().await.unwrap();
}
