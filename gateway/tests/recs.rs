//! Recommendations, events, the tracker and A/B experiments through the gateway, in front of a
//! real inference server serving the sample repository's `recs` and `recs-next`, both on port
//! 0. Tests using Redis (`INFERMESH_TEST_REDIS_URL`, default 127.0.0.1:6379; scripts/test.sh
//! starts one when none answers there) write under a key prefix of their own and delete it.
//! The event validation test is in events.rs: it counts events in the process-wide metrics,
//! which the tests here add to.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

mod common;

use common::{
    Upstream, dead_addr, expect_error, gateway, metrics_text, redis_url, sample, upstream,
};
use infermesh_gateway::GatewayArgs;
use serde_json::{Value, json};

/// A key prefix of one test; its keys are deleted on drop (also when the test panics).
struct RedisPrefix(String);

impl RedisPrefix {
    /// Fails the test with a hint when there is no Redis to use.
    fn new() -> Self {
        drop(Self::conn());
        Self(format!("infermesh-test:{}:", uuid::Uuid::new_v4()))
    }
    fn try_conn() -> redis::RedisResult<redis::Connection> {
        redis::Client::open(redis_url())?.get_connection()
    }
    fn conn() -> redis::Connection {
        Self::try_conn().unwrap_or_else(|e| {
            panic!(
                "no Redis at {} ({e}): set INFERMESH_TEST_REDIS_URL to one, or run scripts/test.sh, \
                 which starts one",
                redis_url()
            )
        })
    }
    fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut Self::conn())
            .unwrap()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        // No panic here: a test that failed for want of Redis is already panicking.
        let Ok(mut c) = Self::try_conn() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}

async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn event(c: &reqwest::Client, base: &str, body: Value) -> u16 {
    c.post(format!("{base}/api/v1/events"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn item_ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_string())
        .collect()
}

const EXPERIMENT: &str = r#"
[recommendations]
model = "recs"
cache_ttl_seconds = 300
[[experiments]]
name = "recs-ab"
salt = "test-salt"
[[experiments.arms]]
name = "control"
model = "recs"
weight = 50
[[experiments.arms]]
name = "treatment"
model = "recs-next"
weight = 50
[experiments.shadow]
model = "recs-next"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_refuse_bad_input_before_calling_the_model() {
    // No inference server at all: everything below is refused before any upstream call.
    let gw = gateway(format!("http://{}", dead_addr()), None, None).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}/api/v1/recommendations", gw.addr);
    for (query, needle) in [
        ("k=0", "k must be 1 to 100"),
        ("k=101", "k must be 1 to 100"),
        ("k=-1", "k"),
        ("k=ten", "k"),
        ("recent=sideways", "sideways"),
        ("kk=3", "kk"),
    ] {
        let r = c.get(format!("{base}/u1?{query}")).send().await.unwrap();
        expect_error(r, 400, needle).await;
    }
    let long = "u".repeat(257);
    expect_error(
        c.get(format!("{base}/{long}")).send().await.unwrap(),
        400,
        "user_id",
    )
    .await;
    expect_error(
        c.get(format!("{base}/u%0A1")).send().await.unwrap(),
        400,
        "control characters",
    )
    .await;
    // A valid request reaches for the (absent) model: 503, not a hang.
    expect_error(
        c.get(format!("{base}/u1?k=100&recent=boost"))
            .send()
            .await
            .unwrap(),
        503,
        "unavailable",
    )
    .await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_is_small_and_what_it_sends_is_accepted() {
    let gw = gateway(format!("http://{}", dead_addr()), None, None).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let r = c.get(format!("{base}/t.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript")
    );
    let js = r.bytes().await.unwrap();
    assert!(js.len() <= 200, "t.js is {} bytes as served", js.len());
    let js = String::from_utf8(js.to_vec()).unwrap();

    // The body imt("view", "u1", "p7") builds: JSON.stringify({event, user_id, product_id,
    // source}) with source undefined (left out), sent by sendBeacon as text/plain.
    assert!(js.contains("JSON.stringify({event:e,user_id:u,product_id:p,source:s})"));
    let mut bodies = vec![r#"{"event":"view","user_id":"u1","product_id":"p7"}"#.to_string()];
    // Where node is installed, run the tracker itself with a stub browser and take what it
    // really sends (the automatic page view, then a click).
    let script = format!(
        "const sent=[];globalThis.navigator={{sendBeacon:(u,b)=>{{sent.push([String(u),b]);return true}}}};\
         globalThis.document={{currentScript:{{src:'{base}/t.js',dataset:{{u:'u1',p:'p7'}}}}}};\
         {js}\n;imt('click','u1','p9','recommendations');console.log(JSON.stringify(sent))"
    );
    if let Ok(out) = std::process::Command::new("node")
        .arg("-e")
        .arg(&script)
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sent: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0].0, format!("{base}/api/v1/events"));
        assert_eq!(sent[0].1, bodies[0]);
        bodies.push(sent[1].1.clone());
    }
    for body in bodies {
        let r = c
            .post(format!("{base}/api/v1/events"))
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{body}");
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_layout_is_the_documented_one() {
    use infermesh_gateway::store::{Counter, Store};
    let prefix = RedisPrefix::new();
    let settings = infermesh_gateway::config::Settings::default().recs;
    let store = Store::redis(
        redis_url(),
        &prefix.0,
        Duration::from_millis(500),
        &settings,
    )
    .unwrap();
    store.ping().await.unwrap();
    store
        .put_recs("u1", "-:-:recs:1:10:none", "{}".into())
        .await
        .unwrap();
    for i in 0..12 {
        store.push_recent("u1", &format!("p{i}")).await.unwrap();
    }
    store
        .put_recs("u1", "-:-:recs:1:10:none", "{}".into())
        .await
        .unwrap();
    store
        .incr("e", "control", Counter::Impressions, 10)
        .await
        .unwrap();
    store
        .incr("e", "control", Counter::Clicks, 1)
        .await
        .unwrap();

    let mut c = RedisPrefix::conn();
    let p = &prefix.0;
    let recs_ttl: i64 = redis::cmd("TTL")
        .arg(format!("{p}recs:u1"))
        .query(&mut c)
        .unwrap();
    assert!((1..=300).contains(&recs_ttl), "{recs_ttl}");
    let field: Option<String> = redis::cmd("HGET")
        .arg(format!("{p}recs:u1"))
        .arg("-:-:recs:1:10:none")
        .query(&mut c)
        .unwrap();
    assert_eq!(field.as_deref(), Some("{}"));
    let recent: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{p}recent:u1"))
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(recent.len(), 10);
    assert_eq!(recent[0], "p11");
    let recent_ttl: i64 = redis::cmd("TTL")
        .arg(format!("{p}recent:u1"))
        .query(&mut c)
        .unwrap();
    assert!(
        recent_ttl > 300 && recent_ttl <= 7 * 24 * 3600,
        "{recent_ttl}"
    );
    let counts: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(format!("{p}ab:e"))
        .query(&mut c)
        .unwrap();
    assert_eq!(counts["control:impressions"], 10);
    assert_eq!(counts["control:clicks"], 1);
    store.invalidate("u1").await.unwrap();
    assert_eq!(
        store.get_recs("u1", "-:-:recs:1:10:none").await.unwrap(),
        None
    );
    let mut keys = prefix.keys();
    keys.sort();
    assert_eq!(keys, [format!("{p}ab:e"), format!("{p}recent:u1")]);
}

/// Miss, hit, a purchase drops the cache, a view drops it too and shapes the next answer.
async fn cache_round(up: &Upstream, redis: Option<(&str, &str)>) {
    let gw = gateway(up.url(), None, redis).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let url = format!("{base}/api/v1/recommendations/u1?k=5");
    let (status, first) = get(&c, &url).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["user_id"], "u1");
    assert_eq!(first["model"], "recs");
    assert_eq!(first["strategy"], "personalised", "{first}");
    assert_eq!(first["experiment"], Value::Null);
    assert_eq!(first["cached"], false);
    assert_eq!(item_ids(&first).len(), 5);
    let (_, second) = get(&c, &url).await;
    assert_eq!(second["cached"], true, "{second}");
    assert_eq!(second["items"], first["items"]);
    assert_eq!(second["version"], first["version"]);
    // Another k is another entry.
    let (_, other_k) = get(&c, &format!("{base}/api/v1/recommendations/u1?k=6")).await;
    assert_eq!(other_k["cached"], false);

    assert_eq!(
        event(
            &c,
            &base,
            json!({"event": "purchase", "user_id": "u1", "product_id": "p1"})
        )
        .await,
        202
    );
    let (_, after) = get(&c, &url).await;
    assert_eq!(after["cached"], false, "a purchase drops the user's cache");
    let (_, again) = get(&c, &url).await;
    assert_eq!(again["cached"], true);

    // Recent views reach the model: with recent=exclude a viewed item never comes back.
    let top = item_ids(&first)[0].clone();
    assert_eq!(
        event(
            &c,
            &base,
            json!({"event": "view", "user_id": "u1", "product_id": top})
        )
        .await,
        202
    );
    let (_, after_view) = get(&c, &url).await;
    assert_eq!(after_view["cached"], false, "a view drops the user's cache");
    let (status, excluded) = get(
        &c,
        &format!("{base}/api/v1/recommendations/u1?k=5&recent=exclude"),
    )
    .await;
    assert_eq!(status, 200, "{excluded}");
    assert!(!item_ids(&excluded).contains(&top), "{top} in {excluded}");
    assert_eq!(item_ids(&excluded).len(), 5);

    // An unknown user gets the popular items.
    let (_, nobody) = get(&c, &format!("{base}/api/v1/recommendations/nobody")).await;
    assert_eq!(nobody["strategy"], "popularity", "{nobody}");
    assert_eq!(item_ids(&nobody).len(), 10);

    let text = metrics_text(&gw).await;
    assert!(
        sample(
            &text,
            "infermesh_gateway_cache_requests_total",
            &["result=\"hit\""]
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "infermesh_gateway_cache_requests_total",
            &["result=\"miss\""]
        )
        .unwrap()
            >= 4.0
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_in_redis_hits_and_is_invalidated() {
    let up = upstream(false).await;
    let prefix = RedisPrefix::new();
    cache_round(&up, Some((redis_url(), &prefix.0))).await;
    assert!(prefix.keys().contains(&format!("{}recent:u1", prefix.0)));
    up.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_in_memory_hits_and_is_invalidated() {
    let up = upstream(false).await;
    cache_round(&up, None).await;
    up.server.shutdown().await.unwrap();
}

/// How long a request may take before the test calls it hung.
const NO_HANG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_or_hung_still_answers_uncached() {
    let up = upstream(false).await;
    let c = reqwest::Client::new();
    // Closed port (also at start-up).
    let closed = format!("redis://{}", dead_addr());
    // A listener that never accepts: connections complete in the kernel's backlog and then
    // nothing ever answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("redis://{}", hung.local_addr().unwrap());
    for url in [closed, hung_url] {
        let gw = gateway(up.url(), None, Some((&url, "infermesh-test:down:"))).await;
        let base = format!("http://{}", gw.addr);
        for _ in 0..3 {
            // The answer must come at all: without the store's timeout (100 ms here) a hung
            // Redis holds the request forever. The bound only tells a hang from an answer; it
            // is no latency target, so a slow machine does not fail it.
            let (status, v) = tokio::time::timeout(
                NO_HANG,
                get(&c, &format!("{base}/api/v1/recommendations/u1?k=3")),
            )
            .await
            .unwrap_or_else(|_| panic!("{url}: no answer within {NO_HANG:?}"));
            assert_eq!(status, 200, "{url}: {v}");
            assert_eq!(v["cached"], false);
            assert_eq!(item_ids(&v).len(), 3);
        }
        assert_eq!(
            event(
                &c,
                &base,
                json!({"event": "view", "user_id": "u1", "product_id": "p1"})
            )
            .await,
            202
        );
        let text = metrics_text(&gw).await;
        assert!(
            sample(&text, "infermesh_gateway_cache_errors_total", &[]).unwrap_or(0.0) >= 1.0,
            "{url}: {text}"
        );
        gw.shutdown().await.unwrap();
    }
    up.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_arms_are_sticky_shadows_stay_hidden_and_counts_add_up() {
    let up = upstream(false).await;
    let prefix = RedisPrefix::new();
    let redis = Some((redis_url(), prefix.0.as_str()));
    let gw = gateway(up.url(), Some(EXPERIMENT), redis).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", gw.addr);
    let experiment = infermesh_gateway::config::Settings::parse(EXPERIMENT)
        .unwrap()
        .experiment
        .unwrap();

    let mut impressions = std::collections::HashMap::<String, u64>::new();
    let mut arms_seen = HashSet::new();
    let mut a_control_user = None;
    for i in 1..=30 {
        let user = format!("u{i}");
        let (status, v) = get(&c, &format!("{base}/api/v1/recommendations/{user}?k=4")).await;
        assert_eq!(status, 200, "{v}");
        let arm = v["experiment"]["arm"].as_str().unwrap().to_string();
        assert_eq!(v["experiment"]["name"], "recs-ab");
        // The documented hash decides, so any process (or analyst) agrees.
        assert_eq!(arm, experiment.assign(&user).name);
        // The arm's model served it, never the shadow's.
        let want_model = if arm == "control" {
            "recs"
        } else {
            "recs-next"
        };
        assert_eq!(v["model"], want_model, "{v}");
        *impressions.entry(arm.clone()).or_default() += item_ids(&v).len() as u64;
        if arm == "control" && a_control_user.is_none() {
            a_control_user = Some(user.clone());
        }
        arms_seen.insert(arm);
    }
    assert_eq!(arms_seen.len(), 2, "30 users fall in both 50% arms");

    // Sticky across processes: a second gateway assigns the same arms, and answers from the
    // shared cache once it has learnt each model's latest version (one miss per model).
    let gw2 = gateway(up.url(), Some(EXPERIMENT), redis).await;
    let mut cached = 0;
    for i in 1..=30 {
        let user = format!("u{i}");
        let (_, v) = get(
            &c,
            &format!("http://{}/api/v1/recommendations/{user}?k=4", gw2.addr),
        )
        .await;
        assert_eq!(
            v["experiment"]["arm"],
            experiment.assign(&user).name.as_str()
        );
        // Cached answers count as impressions too.
        cached += usize::from(v["cached"] == true);
        *impressions
            .entry(v["experiment"]["arm"].as_str().unwrap().to_string())
            .or_default() += item_ids(&v).len() as u64;
    }
    assert!(cached >= 28, "{cached} of 30 from the shared cache");
    gw2.shutdown().await.unwrap();

    // Clicks on recommendations count for the clicker's arm; other clicks do not.
    let clicker = a_control_user.unwrap();
    for source in [Some("recommendations"), Some("search"), None] {
        let mut body = json!({"event": "click", "user_id": clicker, "product_id": "p3"});
        if let Some(s) = source {
            body["source"] = json!(s);
        }
        assert_eq!(event(&c, &base, body).await, 202);
    }

    let (status, counts) = get(&c, &format!("{base}/api/v1/experiments")).await;
    assert_eq!(status, 200, "{counts}");
    let e = &counts["experiments"][0];
    assert_eq!(e["name"], "recs-ab");
    assert_eq!(e["shadow"]["model"], "recs-next");
    for arm in e["arms"].as_array().unwrap() {
        let name = arm["name"].as_str().unwrap();
        assert_eq!(arm["impressions"], impressions[name], "{counts}");
        assert_eq!(arm["clicks"], if name == "control" { 1 } else { 0 });
    }

    // The report reads the same counts.
    let args = infermesh_gateway::ab::ReportArgs {
        gateway: base.clone(),
        experiment: Some("recs-ab".into()),
        json: true,
        timeout_ms: 2000,
    };
    let report: infermesh_gateway::ab::Report =
        serde_json::from_str(&args.run().await.unwrap()).unwrap();
    let arms = &report.experiments[0].arms;
    assert_eq!(arms[0].arm, "control");
    assert_eq!(arms[0].clicks, 1);
    assert_eq!(arms[0].impressions, impressions["control"]);
    let [lo, hi] = arms[0].ctr_ci95.unwrap();
    assert!(lo < arms[0].ctr.unwrap() && arms[0].ctr.unwrap() < hi);
    assert!(arms[1].vs_control.is_some());
    let table = infermesh_gateway::ab::ReportArgs {
        json: false,
        ..args
    }
    .run()
    .await
    .unwrap();
    assert!(table.contains("treatment"), "{table}");

    // The shadow ran beside the requests (in the background: wait for it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics_text(&gw).await;
        let ok = sample(
            &text,
            "infermesh_ab_shadow_requests_total",
            &["experiment=\"recs-ab\"", "outcome=\"ok\""],
        );
        if ok.is_some_and(|n| n >= 1.0) {
            assert!(
                sample(
                    &text,
                    "infermesh_ab_impressions_total",
                    &["experiment=\"recs-ab\"", "arm=\"control\""]
                )
                .unwrap()
                    >= 1.0
            );
            assert_eq!(
                sample(
                    &text,
                    "infermesh_ab_clicks_total",
                    &["experiment=\"recs-ab\"", "arm=\"control\""]
                ),
                Some(1.0)
            );
            break;
        }
        assert!(Instant::now() < deadline, "no shadow call counted: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.shutdown().await.unwrap();
    up.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_experiment_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gateway.toml");
    std::fs::write(&p, EXPERIMENT.replace("weight = 50", "weight = 0")).unwrap();
    let args = GatewayArgs {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        metrics_port: 0,
        inference_url: "http://127.0.0.1:1".into(),
        timeout_ms: 2000,
        max_request_bytes: 16 * 1024,
        config: Some(p),
        redis_url: None,
        redis_timeout_ms: 100,
        redis_key_prefix: "infermesh:".into(),
        limits: Default::default(),
        kafka_brokers: None,
    };
    let e = args.clone().validate().unwrap_err().to_string();
    assert!(e.contains("weight 0"), "{e}");
    let e = GatewayArgs {
        config: None,
        redis_url: Some("http://nope".into()),
        ..args
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("--redis-url"), "{e}");
}
