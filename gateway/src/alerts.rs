//! Live fraud alerts: `GET /api/v1/fraud/alerts/stream` (Server-Sent Events) and
//! `GET /api/v1/fraud/alerts/ws` (WebSocket), fed from `fraud.alerts`.
//!
//! Each gateway instance reads the topic with a consumer of its own ([`AlertFeed::start`]
//! takes any bus subscription: a Kafka tail from the latest offsets, or `infermesh up`'s
//! in-process bus) into a broadcast channel and a ring of the most recent alerts. An event's id
//! is the feed's position after it, `partition:offset` pairs (`0:41,2:17`), so a client that
//! reconnects with `Last-Event-ID` (SSE's header, or `?last_event_id=` on either route) gets
//! the alerts of the ring it has not seen, then the live ones; the id means the same on every
//! gateway instance reading the same topic. A subscriber too slow for the broadcast channel is
//! disconnected (SSE clients reconnect and resume by id).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use infermesh_common::{ErrorKind, ServiceError, metrics_names as m};
use infermesh_pipelines::bus::Subscription;
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::GatewayState;

/// The topic the feed reads.
pub const ALERTS_TOPIC: &str = "fraud.alerts";

/// Alerts kept for resuming clients.
pub const DEFAULT_RING: usize = 10_000;

/// One alert as the feed hands it out.
#[derive(Debug)]
pub struct FeedEvent {
    /// The feed's position after this alert (`partition:offset,...`): the SSE id.
    pub id: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The alert JSON, as produced.
    pub data: String,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Arc<FeedEvent>>,
    position: BTreeMap<i32, i64>,
}

/// The gateway's view of `fraud.alerts`.
#[derive(Debug)]
pub struct AlertFeed {
    ring: Mutex<Ring>,
    capacity: usize,
    tx: broadcast::Sender<Arc<FeedEvent>>,
}

/// Parses a feed position (`0:41,2:17`); `None` when malformed.
pub fn parse_position(id: &str) -> Option<BTreeMap<i32, i64>> {
    if id.trim().is_empty() {
        return Some(BTreeMap::new());
    }
    id.split(',')
        .map(|pair| {
            let (p, o) = pair.trim().split_once(':')?;
            Some((p.parse().ok()?, o.parse().ok()?))
        })
        .collect()
}

fn encode(position: &BTreeMap<i32, i64>) -> String {
    position
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl AlertFeed {
    /// Starts reading `sub` into a feed holding the last `ring` alerts.
    pub fn start(mut sub: Box<dyn Subscription>, ring: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(1024);
        let feed = Arc::new(Self {
            ring: Mutex::new(Ring::default()),
            capacity: ring.max(1),
            tx,
        });
        let weak = Arc::downgrade(&feed);
        tokio::spawn(async move {
            loop {
                let d = match sub.next().await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "alerts feed read failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let Some(feed) = weak.upgrade() else { break };
                feed.push(
                    d.partition,
                    d.offset,
                    String::from_utf8_lossy(&d.message.payload).into_owned(),
                );
                let _ = sub.ack(&d).await;
            }
        });
        feed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, partition: i32, offset: i64, data: String) {
        let mut ring = self.lock();
        ring.position.insert(partition, offset);
        let ev = Arc::new(FeedEvent {
            id: encode(&ring.position),
            partition,
            offset,
            data,
        });
        ring.events.push_back(ev.clone());
        while ring.events.len() > self.capacity {
            ring.events.pop_front();
        }
        // Under the ring's lock, so a subscriber sees each event once: in its replay or live.
        let _ = self.tx.send(ev);
        metrics::counter!(m::GATEWAY_ALERTS_TOTAL).increment(1);
    }

    /// The ring's alerts after `after` (all of them without a position) and the live ones
    /// from now on.
    pub fn subscribe(
        &self,
        after: Option<&BTreeMap<i32, i64>>,
    ) -> (Vec<Arc<FeedEvent>>, broadcast::Receiver<Arc<FeedEvent>>) {
        let ring = self.lock();
        let replay = match after {
            Some(pos) => ring
                .events
                .iter()
                .filter(|e| pos.get(&e.partition).is_none_or(|o| e.offset > *o))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (replay, self.tx.subscribe())
    }
}

/// `?last_event_id=`.
#[derive(Debug, Deserialize)]
pub struct ResumeQuery {
    /// A feed position to resume after.
    pub last_event_id: Option<String>,
}

fn resume_from(
    headers: &HeaderMap,
    q: &ResumeQuery,
) -> Result<Option<BTreeMap<i32, i64>>, ServiceError> {
    let id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.last_event_id.clone());
    match id {
        None => Ok(None),
        Some(id) => parse_position(&id).map(Some).ok_or_else(|| {
            ServiceError::invalid(format!(
                "Last-Event-ID {id:?} is not a feed position (partition:offset,...)"
            ))
        }),
    }
}

fn feed(st: &GatewayState) -> Result<&Arc<AlertFeed>, ServiceError> {
    st.alerts.as_ref().ok_or_else(|| {
        ServiceError::new(
            ErrorKind::Unavailable,
            "no alert feed: the gateway reads fraud.alerts when started with --kafka-brokers (or in infermesh up)",
        )
    })
}

/// Counts a subscriber while it is connected.
struct Subscriber(&'static str);

impl Subscriber {
    fn new(transport: &'static str) -> Self {
        metrics::gauge!(m::GATEWAY_ALERT_SUBSCRIBERS, "transport" => transport).increment(1.0);
        Self(transport)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        metrics::gauge!(m::GATEWAY_ALERT_SUBSCRIBERS, "transport" => self.0).decrement(1.0);
    }
}

/// `GET /api/v1/fraud/alerts/stream`: `event: alert`, `id:` the feed position, `data:` the
/// alert JSON.
pub async fn stream(
    State(st): State<GatewayState>,
    headers: HeaderMap,
    Query(q): Query<ResumeQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ServiceError> {
    let after = resume_from(&headers, &q)?;
    let (replay, rx) = feed(&st)?.subscribe(after.as_ref());
    let guard = Subscriber::new("sse");
    let events = futures::stream::unfold(
        (replay.into_iter(), rx, guard),
        |(mut replay, mut rx, guard)| async move {
            let ev = match replay.next() {
                Some(ev) => ev,
                None => match rx.recv().await {
                    Ok(ev) => ev,
                    // Too slow or the feed is gone: end; the client resumes by id.
                    Err(_) => return None,
                },
            };
            let event = Event::default()
                .event("alert")
                .id(ev.id.clone())
                .data(ev.data.clone());
            Some((Ok(event), (replay, rx, guard)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `GET /api/v1/fraud/alerts/ws`: one text frame per alert, `{"id": POSITION, "alert": {...}}`.
pub async fn websocket(
    State(st): State<GatewayState>,
    headers: HeaderMap,
    Query(q): Query<ResumeQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let subscribed =
        resume_from(&headers, &q).and_then(|after| feed(&st).map(|f| f.subscribe(after.as_ref())));
    match subscribed {
        Ok((replay, rx)) => ws
            .on_upgrade(move |socket| serve_socket(socket, replay, rx))
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn frame(ev: &FeedEvent) -> String {
    // The alert is JSON already; a value that is not (never produced by the pipeline) goes
    // as a string.
    let alert: serde_json::Value = serde_json::from_str(&ev.data)
        .unwrap_or_else(|_| serde_json::Value::String(ev.data.clone()));
    serde_json::json!({ "id": ev.id, "alert": alert }).to_string()
}

async fn serve_socket(
    mut socket: WebSocket,
    replay: Vec<Arc<FeedEvent>>,
    mut rx: broadcast::Receiver<Arc<FeedEvent>>,
) {
    let _guard = Subscriber::new("websocket");
    for ev in replay {
        if socket
            .send(WsMessage::Text(frame(&ev).into()))
            .await
            .is_err()
        {
            return;
        }
    }
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if socket.send(WsMessage::Text(frame(&ev).into())).await.is_err() {
                        return;
                    }
                }
                Err(_) => {
                    let _ = socket.send(WsMessage::Close(None)).await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                // Pings are answered by the library; anything else from the client is ignored.
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_bad_ones_are_refused() {
        let p = parse_position("0:41, 2:17").unwrap();
        assert_eq!(p, BTreeMap::from([(0, 41), (2, 17)]));
        assert_eq!(encode(&p), "0:41,2:17");
        assert!(parse_position("0:x").is_none());
        assert!(parse_position("041").is_none());
        assert_eq!(parse_position(""), Some(BTreeMap::new()));
    }

    #[tokio::test]
    async fn the_ring_replays_what_a_position_has_not_seen_then_goes_live() {
        let (tx, _) = broadcast::channel(16);
        let feed = AlertFeed {
            ring: Mutex::new(Ring::default()),
            capacity: 3,
            tx,
        };
        feed.push(0, 1, "a".into());
        feed.push(1, 5, "b".into());
        feed.push(0, 2, "c".into());
        feed.push(1, 6, "d".into());
        // The ring keeps 3: b, c, d. After "0:1,1:5" come c and d.
        let (replay, mut rx) = feed.subscribe(parse_position("0:1,1:5").as_ref());
        let data: Vec<&str> = replay.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["c", "d"]);
        assert_eq!(replay[1].id, "0:2,1:6");
        feed.push(0, 3, "e".into());
        assert_eq!(rx.recv().await.unwrap().data, "e");
        // Without a position: live only.
        let (replay, _) = feed.subscribe(None);
        assert!(replay.is_empty());
    }
}
