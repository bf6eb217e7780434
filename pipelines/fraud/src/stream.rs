//! Stream features of a transaction, kept in Redis (shared by every process of the group and
//! kept across restarts) or, without Redis, in this process's memory:
//!
//! - **velocity**: `INCR`/`PEXPIRE` counters per user (1 min, 1 h, 24 h) and per device
//!   (1 min, 1 h), fixed buckets of event time;
//! - **an exact event-time sliding window**: the most transactions of the user inside any
//!   `window` (60 s) span that contains this one, over a sorted set of the user's recent event
//!   times. The watermark is the user's latest event time minus `allowed_lateness`; an event
//!   older than it is *late*: scored, but neither added to nor evaluated by the window (counted
//!   in `infermesh_fraud_late_events_total`). Events within the lateness are placed where they
//!   belong, so a late one can complete a window;
//! - **spend**: the user's running sum and count, from which `user_avg_spend` comes.
//!
//! One Lua script per transaction does all of it atomically and records what it computed under
//! the transaction's id (for `dedupe_ttl`): a redelivered transaction gets the same features
//! back and counts nothing twice, so a replay scores exactly as the first time. Keys carry a
//! `{u:<user>}` hash tag; device counters their own.
//!
//! Batches reach Redis in the order they are submitted, without waiting for each other: one
//! task owns the state's connection and sends whatever batches are queued as one pipelined
//! round trip (at most [`MAX_ROUND`] transactions), the next round once the previous one is
//! answered. So [`StreamState::submit`] returns at once with a future of the batch's
//! features, and a pipeline can parse and submit its next batch while Redis runs this one's
//! scripts; the state still sees every transaction in submission order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

/// Most transactions one round trip to Redis carries (batches queued meanwhile are merged up
/// to it): about 0.15 s of scripts, well inside the connection's response timeout.
pub const MAX_ROUND: usize = 4096;

/// Why a submitted batch gets no answer: the task sending to Redis is gone.
const STOPPED: &str = "the stream state's Redis task has stopped";

/// A batch's update, submitted: resolves to each transaction's features, in batch order.
pub type StateUpdate = BoxFuture<'static, Result<Vec<StreamFeatures>, String>>;

/// Sliding-window and retention settings.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Key prefix in Redis.
    pub prefix: String,
    /// The sliding window's length.
    pub window: Duration,
    /// How far behind a user's latest event time an event may be and still enter the window.
    pub allowed_lateness: Duration,
    /// How long a transaction's computed features are remembered (replays within it get them
    /// back and count nothing twice).
    pub dedupe_ttl: Duration,
    /// How long a user's spend sum and count live without a transaction.
    pub spend_ttl: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            prefix: "infermesh:fraud:".into(),
            window: Duration::from_secs(60),
            allowed_lateness: Duration::from_secs(10),
            dedupe_ttl: Duration::from_secs(24 * 3600),
            spend_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What the state is asked about one transaction.
#[derive(Debug, Clone)]
pub struct TxKey<'a> {
    /// Transaction id.
    pub transaction_id: &'a str,
    /// User.
    pub user_id: &'a str,
    /// Device, if any.
    pub device_id: Option<&'a str>,
    /// Event time, Unix ms.
    pub ts_ms: i64,
    /// Amount.
    pub amount: f64,
}

/// The stream features of one transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamFeatures {
    /// False when the transaction was seen before (the features are the first time's).
    pub fresh: bool,
    /// The user's transactions in this minute, this hour and this day (buckets of event time),
    /// this one included.
    pub user_1m: u64,
    /// See `user_1m`.
    pub user_1h: u64,
    /// See `user_1m`.
    pub user_24h: u64,
    /// The device's transactions this minute and hour; `None` without a device.
    pub device_1m: Option<u64>,
    /// See `device_1m`.
    pub device_1h: Option<u64>,
    /// Most transactions of the user in one window span containing this one (0 when late).
    pub window_max: u64,
    /// Older than the watermark: not in the window.
    pub late: bool,
    /// The user's average amount before this transaction; `None` for a first transaction.
    pub avg_spend_before: Option<f64>,
    /// The user's average amount with this transaction.
    pub avg_spend_after: f64,
}

// The user's events from `ts - w` on, read once: the latest gives the watermark, the rest the
// window. Events older than the window's reach are pruned every 8th transaction of the user
// (they are never read; pruning is for memory only).
const SCRIPT: &str = r"
local prev = redis.call('GET', KEYS[1])
if prev then return '0|' .. prev end
local ts = tonumber(ARGV[2])
local w = tonumber(ARGV[4])
local lateness = tonumber(ARGV[5])
local function bump(k, ttl)
  local n = redis.call('INCR', k)
  if n == 1 then redis.call('PEXPIRE', k, ttl) end
  return n
end
local u1m = bump(KEYS[2], 120000)
local u1h = bump(KEYS[3], 7200000)
local u24h = bump(KEYS[4], 172800000)
local d1m, d1h = -1, -1
if ARGV[7] == '1' then
  d1m = bump(KEYS[5], 120000)
  d1h = bump(KEYS[6], 7200000)
end
local spend = redis.call('HMGET', KEYS[8], 'sum', 'n')
local bsum = spend[1] or '0'
local bcnt = spend[2] or '0'
redis.call('HINCRBYFLOAT', KEYS[8], 'sum', ARGV[6])
local n = redis.call('HINCRBY', KEYS[8], 'n', 1)
redis.call('PEXPIRE', KEYS[8], ARGV[8])
local evs = redis.call('ZRANGEBYSCORE', KEYS[7], ts - w, '+inf', 'WITHSCORES')
local maxts = ts
if #evs > 0 and tonumber(evs[#evs]) > maxts then maxts = tonumber(evs[#evs]) end
local late, win = 0, 0
if ts < maxts - lateness then
  late = 1
else
  redis.call('ZADD', KEYS[7], ts, ARGV[3])
  if n % 8 == 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. (maxts - lateness - w))
  end
  redis.call('PEXPIRE', KEYS[7], w + lateness + 60000)
  local s = {}
  local placed = false
  for i = 2, #evs, 2 do
    local v = tonumber(evs[i])
    if v > ts + w then break end
    if not placed and v > ts then
      s[#s + 1] = ts
      placed = true
    end
    s[#s + 1] = v
  end
  if not placed then s[#s + 1] = ts end
  local j = 1
  for i = 1, #s do
    if s[i] > ts then break end
    while j <= #s and s[j] <= s[i] + w do j = j + 1 end
    if j - i > win then win = j - i end
  end
end
local out = u1m .. '|' .. u1h .. '|' .. u24h .. '|' .. d1m .. '|' .. d1h .. '|' .. win .. '|' .. late .. '|' .. bsum .. '|' .. bcnt .. '|' .. ARGV[6]
redis.call('SET', KEYS[1], out, 'PX', ARGV[1])
return '1|' .. out
";

/// Where the state lives.
pub enum StreamState {
    /// Redis.
    Redis {
        /// The queue of the task that owns the connection (see the module doc).
        queue: mpsc::UnboundedSender<Round>,
        /// The script's SHA-1 (the task loads it on first use).
        hash: String,
        /// Settings.
        cfg: StreamConfig,
    },
    /// This process's memory, bounded to `max_users` users.
    Memory {
        /// The state.
        state: Mutex<Memory>,
        /// Settings.
        cfg: StreamConfig,
        /// Most users tracked (the oldest are forgotten past it).
        max_users: usize,
    },
}

impl std::fmt::Debug for StreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamState::Redis { cfg, .. } => write!(f, "Redis({})", cfg.prefix),
            StreamState::Memory { max_users, .. } => write!(f, "Memory({max_users})"),
        }
    }
}

/// The in-memory state.
#[derive(Debug, Default)]
pub struct Memory {
    counters: HashMap<(u8, String, i64), u64>,
    users: HashMap<String, UserState>,
    order: VecDeque<String>,
    seen: HashMap<String, StreamFeatures>,
    seen_order: VecDeque<String>,
}

#[derive(Debug, Default)]
struct UserState {
    events: BTreeMap<(i64, String), ()>,
    sum: f64,
    n: u64,
}

const PERIODS: [i64; 3] = [60_000, 3_600_000, 86_400_000];

impl StreamState {
    /// State in Redis, over `conn` (which should be the state's alone: other commands on it
    /// would wait behind the queued scripts). Spawns the task that sends the batches, so it
    /// must be called inside a Tokio runtime; the task ends when the state is dropped.
    pub fn redis(conn: redis::aio::ConnectionManager, cfg: StreamConfig) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_rounds(conn, rx));
        StreamState::Redis {
            queue,
            hash: redis::Script::new(SCRIPT).get_hash().to_string(),
            cfg,
        }
    }

    /// State in memory for at most `max_users` users.
    pub fn memory(cfg: StreamConfig, max_users: usize) -> Self {
        StreamState::Memory {
            state: Mutex::new(Memory::default()),
            cfg,
            max_users: max_users.max(1),
        }
    }

    /// Updates the state with `txs` (in order) and returns each one's features.
    pub async fn update(&self, txs: &[TxKey<'_>]) -> Result<Vec<StreamFeatures>, String> {
        self.submit(txs).await
    }

    /// Submits `txs` (in order) without waiting: the state takes them after everything
    /// submitted before and before anything submitted after, whenever the returned future is
    /// awaited (the in-memory state updates at once). The pipeline's batch queue bounds what
    /// is waiting here.
    pub fn submit(&self, txs: &[TxKey<'_>]) -> StateUpdate {
        match self {
            StreamState::Redis { queue, hash, cfg } => {
                if txs.is_empty() {
                    return Box::pin(std::future::ready(Ok(Vec::new())));
                }
                let cmds: Vec<redis::Cmd> = txs.iter().map(|t| command(hash, cfg, t)).collect();
                let (reply, answer) = oneshot::channel();
                if queue.send(Round { cmds, reply }).is_err() {
                    return Box::pin(std::future::ready(Err(STOPPED.to_string())));
                }
                Box::pin(async move {
                    let out = answer.await.map_err(|_| STOPPED.to_string())??;
                    out.iter().map(|s| decode(s)).collect()
                })
            }
            StreamState::Memory {
                state,
                cfg,
                max_users,
            } => {
                let mut m = state.lock().unwrap_or_else(|p| p.into_inner());
                let out = txs.iter().map(|t| m.update(t, cfg, *max_users)).collect();
                Box::pin(std::future::ready(Ok(out)))
            }
        }
    }
}

/// One batch's scripts on their way to Redis, and where their answers go.
pub struct Round {
    cmds: Vec<redis::Cmd>,
    reply: oneshot::Sender<Result<Vec<String>, String>>,
}

impl std::fmt::Debug for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Round({})", self.cmds.len())
    }
}

/// The script call of one transaction.
fn command(hash: &str, cfg: &StreamConfig, t: &TxKey<'_>) -> redis::Cmd {
    let p = &cfg.prefix;
    let u = t.user_id;
    let d = t.device_id.unwrap_or("");
    let b = |period: i64| t.ts_ms.div_euclid(period);
    let mut c = redis::cmd("EVALSHA");
    c.arg(hash)
        .arg(8)
        .arg(format!("{p}tx:{{u:{u}}}:{}", t.transaction_id))
        .arg(format!("{p}vel:{{u:{u}}}:1m:{}", b(PERIODS[0])))
        .arg(format!("{p}vel:{{u:{u}}}:1h:{}", b(PERIODS[1])))
        .arg(format!("{p}vel:{{u:{u}}}:24h:{}", b(PERIODS[2])))
        .arg(format!("{p}vel:{{d:{d}}}:1m:{}", b(PERIODS[0])))
        .arg(format!("{p}vel:{{d:{d}}}:1h:{}", b(PERIODS[1])))
        .arg(format!("{p}win:{{u:{u}}}"))
        .arg(format!("{p}spend:{{u:{u}}}"))
        .arg(ms(cfg.dedupe_ttl))
        .arg(t.ts_ms)
        .arg(t.transaction_id)
        .arg(ms(cfg.window))
        .arg(ms(cfg.allowed_lateness))
        .arg(t.amount)
        .arg(if t.device_id.is_some() { "1" } else { "0" })
        .arg(ms(cfg.spend_ttl));
    c
}

/// The task that owns the state's connection: takes the batches queued since the last round
/// trip (up to [`MAX_ROUND`] transactions, in submission order), sends them as one pipeline,
/// and hands each batch its answers.
async fn send_rounds(
    mut conn: redis::aio::ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Round>,
) {
    while let Some(first) = rx.recv().await {
        let mut n = first.cmds.len();
        let mut rounds = vec![first];
        while n < MAX_ROUND {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.cmds.len();
                    rounds.push(r);
                }
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        let mut replies = Vec::with_capacity(rounds.len());
        for r in rounds {
            replies.push((r.cmds.len(), r.reply));
            for c in r.cmds {
                pipe.add_command(c);
            }
        }
        let result: Result<Vec<String>, String> = match pipe.query_async(&mut conn).await {
            Ok(v) => Ok(v),
            // Redis does not have the script yet (first use, or after a restart): no script of
            // the round ran, and nothing else is sent meanwhile, so the round is sent again.
            Err(e) if e.code() == Some("NOSCRIPT") => {
                match redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(SCRIPT)
                    .query_async::<String>(&mut conn)
                    .await
                {
                    Ok(_) => pipe.query_async(&mut conn).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let result = result.and_then(|out| {
            if out.len() == n {
                Ok(out)
            } else {
                Err(format!("{} answers to {n} scripts", out.len()))
            }
        });
        match result {
            Ok(mut out) => {
                for (k, reply) in replies {
                    let rest = out.split_off(k);
                    let _ = reply.send(Ok(std::mem::replace(&mut out, rest)));
                }
            }
            Err(e) => {
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Parses the script's `fresh|u1m|u1h|u24h|d1m|d1h|win|late|sum|n|amount`.
fn decode(s: &str) -> Result<StreamFeatures, String> {
    let parts: Vec<&str> = s.split('|').collect();
    if parts.len() != 11 {
        return Err(format!("unexpected stream state {s:?}"));
    }
    let int = |i: usize| -> Result<i64, String> {
        parts[i]
            .parse::<i64>()
            .map_err(|e| format!("stream state {s:?}: {e}"))
    };
    let float = |i: usize| -> Result<f64, String> {
        parts[i]
            .parse::<f64>()
            .map_err(|e| format!("stream state {s:?}: {e}"))
    };
    let opt = |x: i64| (x >= 0).then_some(x as u64);
    let (sum, n, amount) = (float(8)?, float(9)?, float(10)?);
    Ok(StreamFeatures {
        fresh: int(0)? == 1,
        user_1m: int(1)?.max(0) as u64,
        user_1h: int(2)?.max(0) as u64,
        user_24h: int(3)?.max(0) as u64,
        device_1m: opt(int(4)?),
        device_1h: opt(int(5)?),
        window_max: int(6)?.max(0) as u64,
        late: int(7)? == 1,
        avg_spend_before: (n > 0.0).then(|| sum / n),
        avg_spend_after: (sum + amount) / (n + 1.0),
    })
}

impl Memory {
    fn bump(&mut self, kind: u8, id: &str, ts: i64, period: i64) -> u64 {
        let n = self
            .counters
            .entry((kind, id.to_string(), ts.div_euclid(period)))
            .or_insert(0);
        *n += 1;
        *n
    }

    fn update(&mut self, t: &TxKey<'_>, cfg: &StreamConfig, max_users: usize) -> StreamFeatures {
        if let Some(f) = self.seen.get(t.transaction_id) {
            return StreamFeatures { fresh: false, ..*f };
        }
        let (w, lateness) = (ms(cfg.window), ms(cfg.allowed_lateness));
        let user_1m = self.bump(0, t.user_id, t.ts_ms, PERIODS[0]);
        let user_1h = self.bump(1, t.user_id, t.ts_ms, PERIODS[1]);
        let user_24h = self.bump(2, t.user_id, t.ts_ms, PERIODS[2]);
        let (device_1m, device_1h) = match t.device_id {
            Some(d) => (
                Some(self.bump(3, d, t.ts_ms, PERIODS[0])),
                Some(self.bump(4, d, t.ts_ms, PERIODS[1])),
            ),
            None => (None, None),
        };
        if !self.users.contains_key(t.user_id) {
            self.order.push_back(t.user_id.to_string());
        }
        let u = self.users.entry(t.user_id.to_string()).or_default();
        let avg_spend_before = (u.n > 0).then(|| u.sum / u.n as f64);
        u.sum += t.amount;
        u.n += 1;
        let avg_spend_after = u.sum / u.n as f64;
        let maxts = u
            .events
            .keys()
            .next_back()
            .map_or(t.ts_ms, |(m, _)| (*m).max(t.ts_ms));
        let (late, window_max) = if t.ts_ms < maxts - lateness {
            (true, 0)
        } else {
            u.events.insert((t.ts_ms, t.transaction_id.to_string()), ());
            let floor = maxts - lateness - w;
            while u.events.keys().next().is_some_and(|(ts, _)| *ts < floor) {
                u.events.pop_first();
            }
            let s: Vec<i64> = u
                .events
                .range((t.ts_ms - w, String::new())..)
                .map(|((ts, _), ())| *ts)
                .take_while(|ts| *ts <= t.ts_ms + w)
                .collect();
            let mut best = 0;
            let mut j = 0;
            for i in 0..s.len() {
                if s[i] > t.ts_ms {
                    break;
                }
                while j < s.len() && s[j] <= s[i] + w {
                    j += 1;
                }
                best = best.max(j - i);
            }
            (false, best as u64)
        };
        let f = StreamFeatures {
            fresh: true,
            user_1m,
            user_1h,
            user_24h,
            device_1m,
            device_1h,
            window_max,
            late,
            avg_spend_before,
            avg_spend_after,
        };
        self.seen.insert(t.transaction_id.to_string(), f);
        self.seen_order.push_back(t.transaction_id.to_string());
        // Bounds: users, remembered transactions, and counters of past buckets.
        while self.order.len() > max_users {
            if let Some(old) = self.order.pop_front() {
                self.users.remove(&old);
            }
        }
        while self.seen_order.len() > max_users.saturating_mul(4) {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.counters.len() > max_users.saturating_mul(8) {
            let now = t.ts_ms;
            self.counters.retain(|(kind, _, bucket), _| {
                let period = PERIODS[usize::from(if *kind >= 3 { *kind - 3 } else { *kind })];
                *bucket >= now.div_euclid(period) - 1
            });
        }
        f
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tx<'a>(id: &'a str, user: &'a str, ts_s: i64) -> TxKey<'a> {
        TxKey {
            transaction_id: id,
            user_id: user,
            device_id: Some("d1"),
            ts_ms: ts_s * 1000,
            amount: 10.0,
        }
    }

    #[tokio::test]
    async fn five_in_sixty_seconds_late_events_and_replays_in_memory() {
        let state = StreamState::memory(StreamConfig::default(), 100);
        let ids: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        // 0, 15, 30, 45: four in a minute.
        let first: Vec<TxKey<'_>> = [0, 15, 30, 45]
            .iter()
            .enumerate()
            .map(|(i, s)| tx(&ids[i], "u", 1_000_000 + s))
            .collect();
        let f = state.update(&first).await.unwrap();
        assert_eq!(
            f.iter().map(|f| f.window_max).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // 61 s after the first: the window holds 15..61 (4) plus this = 4, not 5.
        let f = state.update(&[tx(&ids[4], "u", 1_000_061)]).await.unwrap();
        assert_eq!(f[0].window_max, 4);
        // An event 5 s late (within the 10 s lateness) at 1_000_058 completes [15, 61]... and
        // [0, 58] misses 61: the best span containing it holds 15, 30, 45, 58, 61 = 5.
        let f = state.update(&[tx(&ids[5], "u", 1_000_058)]).await.unwrap();
        assert_eq!(f[0].window_max, 5);
        assert!(!f[0].late);
        // 20 s behind the latest: late, not counted.
        let f = state.update(&[tx(&ids[6], "u", 1_000_041)]).await.unwrap();
        assert!(f[0].late);
        assert_eq!(f[0].window_max, 0);
        // A replay gets the first answer and counts nothing.
        let again = state.update(&[tx(&ids[5], "u", 1_000_058)]).await.unwrap();
        assert!(!again[0].fresh);
        assert_eq!(again[0].window_max, 5);
        let next = state.update(&[tx(&ids[7], "u", 1_000_062)]).await.unwrap();
        assert_eq!(next[0].user_1h, 8);
        assert_eq!(next[0].avg_spend_before, Some(10.0));
    }

    #[test]
    fn decode_reads_the_script_answer() {
        let f = decode("1|2|3|4|-1|-1|5|0|30|3|20").unwrap();
        assert!(f.fresh);
        assert_eq!((f.user_1m, f.device_1m, f.window_max), (2, None, 5));
        assert_eq!(f.avg_spend_before, Some(10.0));
        assert_eq!(f.avg_spend_after, 12.5);
        assert!(decode("1|2").is_err());
    }
}
