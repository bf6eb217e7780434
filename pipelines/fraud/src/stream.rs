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
//! back and counts nothing twice, so a replay scores exactly as the first time. A batch is one
//! pipelined round trip. Keys carry a `{u:<user>}` hash tag; device counters their own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

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
local bsum = redis.call('HGET', KEYS[8], 'sum') or '0'
local bcnt = redis.call('HGET', KEYS[8], 'n') or '0'
redis.call('HINCRBYFLOAT', KEYS[8], 'sum', ARGV[6])
redis.call('HINCRBY', KEYS[8], 'n', 1)
redis.call('PEXPIRE', KEYS[8], ARGV[8])
local maxts = ts
local top = redis.call('ZRANGE', KEYS[7], -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) > maxts then maxts = tonumber(top[2]) end
local late, win = 0, 0
if ts < maxts - lateness then
  late = 1
else
  redis.call('ZADD', KEYS[7], ts, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. (maxts - lateness - w))
  redis.call('PEXPIRE', KEYS[7], w + lateness + 60000)
  local evs = redis.call('ZRANGEBYSCORE', KEYS[7], ts - w, ts + w, 'WITHSCORES')
  local s = {}
  for i = 2, #evs, 2 do s[#s + 1] = tonumber(evs[i]) end
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
        /// The connection.
        conn: redis::aio::ConnectionManager,
        /// The script (its SHA-1; loaded on first use).
        script: redis::Script,
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
    /// State in Redis.
    pub fn redis(conn: redis::aio::ConnectionManager, cfg: StreamConfig) -> Self {
        StreamState::Redis {
            conn,
            script: redis::Script::new(SCRIPT),
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
        match self {
            StreamState::Redis { conn, script, cfg } => {
                if txs.is_empty() {
                    return Ok(Vec::new());
                }
                let mut pipe = redis::pipe();
                let hash = script.get_hash();
                for t in txs {
                    let p = &cfg.prefix;
                    let u = t.user_id;
                    let d = t.device_id.unwrap_or("");
                    let b = |period: i64| t.ts_ms.div_euclid(period);
                    pipe.cmd("EVALSHA")
                        .arg(hash)
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
                }
                let mut c = conn.clone();
                let out: Vec<String> = match pipe.query_async(&mut c).await {
                    Ok(v) => v,
                    // Redis does not have the script yet (first use, or after a restart).
                    Err(e) if e.code() == Some("NOSCRIPT") => {
                        redis::cmd("SCRIPT")
                            .arg("LOAD")
                            .arg(SCRIPT)
                            .query_async::<String>(&mut c)
                            .await
                            .map_err(|e| e.to_string())?;
                        pipe.query_async(&mut c).await.map_err(|e| e.to_string())?
                    }
                    Err(e) => return Err(e.to_string()),
                };
                out.iter().map(|s| decode(s)).collect()
            }
            StreamState::Memory {
                state,
                cfg,
                max_users,
            } => {
                let mut m = state.lock().unwrap_or_else(|p| p.into_inner());
                Ok(txs.iter().map(|t| m.update(t, cfg, *max_users)).collect())
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
