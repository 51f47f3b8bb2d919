//! The reconciler (SPEC §4.4): even a webhook that never came.
//!
//! Webhooks can be lost before they reach hookstream (the sender gives up after its retry
//! schedule, an endpoint is disabled, a proxy drops them). So every `RECONCILE_INTERVAL_SECS`
//! (±10 % jitter) one replica — the one that takes the lease `{ns}:reconcile`, held for the
//! interval, so one pass per interval across all replicas; a dead holder's lease lapses — lists
//! every calendar of each API version in `RECONCILE_APIS` and each calendar's events from now
//! to now + `RECONCILE_HORIZON_HOURS`, every page of the cursor.
//!
//! **It only finds candidates** (the shape of kube-rs's `Controller`): an event whose listed
//! state the decision ([`crate::handlers::decision`]) would act on — it looks wanted and has no
//! bot, or unwanted and has one — is *drift*, and gets one `hookstream.reconcile` entry. The
//! stream is the work queue: that entry takes the meeting's lock, reads the current event,
//! decides, writes within the write limit, retries and dead-letters like any other. The
//! reconciler never writes to the API, and a converged calendar costs no writes and no entries.
//!
//! Reads are paced at `RECONCILE_READS_PER_SEC` across replicas (a limiter in Redis,
//! `{ns}:ratelimit:reconcile-reads`). An API that misbehaves cannot trap the pass: a cursor
//! that repeats, more than [`MAX_PAGES`] pages, or a page that cannot be read ends that
//! listing with a `warn` line and the pass's `error` result; the other calendars are still
//! reconciled.
//!
//! `auto` means the API versions whose calendar webhooks this namespace processed in the last
//! 30 days: the calendar handlers record it in `{ns}:reconcile:apis` (a hash, version → Unix
//! ms), at most once an hour per version and process.

use crate::clock::now_ms;
use crate::config::RecordPolicy;
use crate::handlers::calendar_v1::CalendarEvent;
use crate::handlers::calendar_v2::Current;
use crate::handlers::decision::{decide, Decision, Facts};
use crate::handlers::meeting_baas::{is_uuid, Api};
use crate::handlers::reconcile::{apis_key, name, ApiVersion, EVENT};
use crate::limiter::WriteLimiter;
use redis::RedisResult;
use serde::Deserialize;
use serde_json::json;
use shared::conn::Conn;
use shared::keys::Partitions;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// The most pages one listing may take before it is given up as endless.
pub const MAX_PAGES: usize = 1000;
/// The longest a meeting whose reconcile entries keep dying is held back.
pub const MAX_HOLD_BACK: Duration = Duration::from_secs(86_400);
/// `auto` looks back this far for calendar webhooks of an API version.
const SEEN_FOR_MS: u64 = 30 * 86_400_000;

/// Which API versions to reconcile (`RECONCILE_APIS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apis {
    /// The versions whose calendar webhooks the namespace processed in the last 30 days.
    Auto,
    /// These (`none`: empty).
    These(Vec<ApiVersion>),
}

impl std::str::FromStr for Apis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => return Ok(Self::Auto),
            "none" => return Ok(Self::These(Vec::new())),
            _ => {}
        }
        let mut versions = Vec::new();
        for part in s.split(',').map(str::trim) {
            let version = match part {
                "v1" => ApiVersion::V1,
                "v2" => ApiVersion::V2,
                _ => return Err("expected auto, none, v1, v2 or v1,v2".into()),
            };
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
        Ok(Self::These(versions))
    }
}

/// The reconciler's settings (`RECONCILE_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `RECONCILE_INTERVAL_SECS`; zero: off.
    pub interval: Duration,
    pub horizon: Duration,
    pub apis: Apis,
    pub reads_per_sec: u32,
}

/// Missing or extra: which way a meeting drifted from what the calendar wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    MissingBot,
    ExtraBot,
}

impl DriftKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::MissingBot => "missing_bot",
            Self::ExtraBot => "extra_bot",
        }
    }
}

/// One drifted meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub api: ApiVersion,
    pub calendar_id: String,
    pub event_id: String,
    pub series_id: Option<String>,
    pub kind: DriftKind,
}

impl Drift {
    /// The dedup identity of its `hookstream.reconcile` entries.
    pub fn dedup_id(&self) -> String {
        format!("reconcile:{}:{}:{}", name(self.api), self.calendar_id, self.event_id)
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            DriftKind::MissingBot => "missing bot",
            DriftKind::ExtraBot => "extra bot",
        };
        write!(f, "{} calendar {} event {}: {kind}", name(self.api), self.calendar_id, self.event_id)
    }
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct Report {
    pub calendars: usize,
    pub events: usize,
    pub drift: Vec<Drift>,
    /// Listings that ended early (a repeating cursor, too many pages, an unreadable page).
    pub errors: Vec<String>,
    /// Drifted meetings not queued this pass: their last reconcile entry is dead (SPEC §4.4).
    pub held_back: usize,
    pub duration: Duration,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct V2Page<T> {
    #[serde(default)]
    data: Vec<T>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct V2Calendar {
    calendar_id: String,
}

/// A v2 listed event: the fields of the current event the decision reads, but no attendees
/// (so `RECORD_POLICY=organizer` cannot be decided from it).
#[derive(Deserialize)]
struct V2Event {
    event_id: String,
    #[serde(flatten)]
    event: Current,
}

#[derive(Deserialize)]
struct V1Calendar {
    uuid: String,
}

#[derive(Deserialize)]
struct V1Page {
    #[serde(default)]
    data: Vec<V1Event>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct V1Event {
    uuid: String,
    #[serde(flatten)]
    event: CalendarEvent,
}

/// The drift an event's listed state shows, if any. `organizer_unknown`: the list cannot tell
/// whether the owner organises it (v2), so an event that could drift either way is a candidate
/// (its entry reads the details and decides).
fn drift_of(facts: Facts, policy: RecordPolicy, organizer_unknown: bool) -> Option<DriftKind> {
    let decisions: Vec<Decision> = if organizer_unknown && policy == RecordPolicy::Organizer {
        vec![
            decide(&Facts { owner_organises: true, ..facts }, policy),
            decide(&Facts { owner_organises: false, ..facts }, policy),
        ]
    } else {
        vec![decide(&facts, policy)]
    };
    decisions.into_iter().find_map(|d| match d {
        Decision::Schedule => Some(DriftKind::MissingBot),
        Decision::Unschedule => Some(DriftKind::ExtraBot),
        Decision::Nothing => None,
    })
}

/// Finds drifted meetings and appends one `hookstream.reconcile` entry for each.
pub struct Reconciler {
    api: Api,
    reads: WriteLimiter,
    con: Conn,
    partitions: Partitions,
    namespace: String,
    policy: RecordPolicy,
    settings: Settings,
    /// Spans, when tracing is on: one `INTERNAL` span per pass, its API reads inside it.
    traces: Option<shared::otel::Traces>,
}

/// Follows a listing's cursor, with the guards of the module docs. `fetch(cursor)` reads one
/// page: its items and the next cursor.
async fn follow<T, F, Fut>(what: &str, mut fetch: F, errors: &mut Vec<String>) -> Vec<T>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), String>>,
{
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        match fetch(cursor.clone()).await {
            Ok((page, next)) => {
                items.extend(page);
                match next.filter(|c| !c.is_empty()) {
                    None => return items,
                    Some(next) if !seen.insert(next.clone()) => {
                        let why = format!("{what}: the API repeated the cursor {next:?}; listing stopped");
                        tracing::warn!("{why}");
                        errors.push(why);
                        return items;
                    }
                    Some(next) => cursor = Some(next),
                }
            }
            Err(why) => {
                let why = format!("{what}: {why}; listing stopped");
                tracing::warn!("{why}");
                errors.push(why);
                return items;
            }
        }
    }
    let why = format!("{what}: more than {MAX_PAGES} pages; listing stopped");
    tracing::warn!("{why}");
    errors.push(why);
    items
}

impl Reconciler {
    /// The reconciler for `config`, on the command connection `con`.
    pub fn build(config: &crate::ProcessorConfig, con: Conn) -> Result<Self, reqwest::Error> {
        let http = crate::handlers::http_client(config.handler_timeout)?;
        let namespace = config.common.namespace.clone();
        let reads = WriteLimiter::new(
            format!("{{{namespace}}}:ratelimit:reconcile-reads"),
            con.clone(),
            config.reconcile.reads_per_sec,
        );
        // Its Api never writes: the write limiter it carries is never asked. Its reads go through
        // the API's breaker: while it is open, nobody calls the API, the reconciler included.
        let breaker = crate::breaker::Breakers::new(&config.common.partitions(), &con, config.breakers).meeting_baas;
        let api = Api::new(http, config, WriteLimiter::new(String::new(), con.clone(), 0), None, breaker);
        Ok(Self {
            api,
            reads,
            con,
            partitions: config.common.partitions(),
            namespace,
            policy: config.record_policy,
            settings: config.reconcile.clone(),
            traces: None,
        })
    }

    /// Makes a span per pass with `traces` ([`crate::traces`]).
    pub fn with_traces(mut self, traces: Option<shared::otel::Traces>) -> Self {
        self.traces = traces;
        self
    }

    /// [`Self::pass`] inside a `reconcile` span when tracing is on.
    async fn traced_pass(&self) -> Result<Report, String> {
        let Some(traces) = &self.traces else { return self.pass(false).await };
        use opentelemetry::context::FutureExt;
        use opentelemetry::trace::TraceContextExt;
        use shared::otel::{KeyValue, SpanKind, Status};
        let span = shared::otel::span("reconcile", SpanKind::Internal, vec![]);
        let cx = traces.start(span, &opentelemetry::Context::new()).with_value(traces.clone());
        let report = self.pass(false).with_context(cx.clone()).await;
        let span = cx.span();
        match &report {
            Ok(r) => span.set_attributes([
                KeyValue::new("hookstream.calendars", r.calendars as i64),
                KeyValue::new("hookstream.drift", r.drift.len() as i64),
                KeyValue::new("hookstream.errors", r.errors.len() as i64),
            ]),
            Err(why) => span.set_status(Status::error(why.clone())),
        }
        span.end();
        report
    }

    /// The API versions to reconcile now.
    async fn versions(&self) -> RedisResult<Vec<ApiVersion>> {
        match &self.settings.apis {
            Apis::These(versions) => Ok(versions.clone()),
            Apis::Auto => {
                let seen: std::collections::HashMap<String, u64> =
                    redis::cmd("HGETALL").arg(apis_key(&self.namespace)).query_async(&mut self.con.clone()).await?;
                let since = now_ms().saturating_sub(SEEN_FOR_MS);
                let recent = |v: &str| seen.get(v).is_some_and(|at| *at >= since);
                Ok([ApiVersion::V1, ApiVersion::V2].into_iter().filter(|v| recent(name(*v))).collect())
            }
        }
    }

    /// One read, paced.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Option<T>, String> {
        self.reads.acquire(None).await.map_err(|e| format!("the read limiter in Redis failed: {e}"))?;
        self.api.get_query(segments, query).await.map_err(|e| e.to_string())
    }

    /// One pass: lists, finds the drift and — unless `dry_run` — appends one entry per drifted
    /// meeting. `Err` when a list of calendars cannot be read at all (API down, bad key).
    pub async fn pass(&self, dry_run: bool) -> Result<Report, String> {
        let started = Instant::now();
        let mut report = Report::default();
        if self.policy == RecordPolicy::None {
            return Ok(report); // hookstream leaves every bot as it is
        }
        let versions = self.versions().await.map_err(|e| format!("Redis: {e}"))?;
        let from = crate::clock::now();
        let to = from + chrono::Duration::from_std(self.settings.horizon).unwrap_or(chrono::Duration::days(7));
        let (from, to) = (
            from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        for api in versions {
            match api {
                ApiVersion::V2 => self.pass_v2(&from, &to, &mut report).await?,
                ApiVersion::V1 => self.pass_v1(&from, &to, &mut report).await?,
            }
        }
        let mut seen = HashSet::new();
        report.drift.retain(|d| seen.insert((d.api, d.calendar_id.clone(), d.event_id.clone())));
        let held = self.held_back(&report).await.map_err(|e| format!("Redis: {e}"))?;
        for drift in &report.drift {
            if let Some(wait) = held.get(&drift.dedup_id()) {
                tracing::info!(
                    api = name(drift.api),
                    calendar_id = %drift.calendar_id,
                    event_id = %drift.event_id,
                    kind = drift.kind.label(),
                    retry_in_s = wait.as_secs(),
                    "reconcile: a meeting still drifts, but its last reconcile entry is dead; held back"
                );
                report.held_back += 1;
                continue;
            }
            tracing::warn!(
                api = name(drift.api),
                calendar_id = %drift.calendar_id,
                event_id = %drift.event_id,
                kind = drift.kind.label(),
                "reconcile: a meeting's bots do not match its calendar (a webhook was lost?); queued to be decided"
            );
            if !dry_run {
                self.append(drift).await.map_err(|e| format!("Redis: {e}"))?;
            }
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// The drifted meetings whose last reconcile entry is dead and whose delay is not over, with
    /// what is left of it: one interval after the first dead entry, doubling with each one after,
    /// at most [`MAX_HOLD_BACK`] (SPEC §4.4). A meeting found matching its calendar (no drift in
    /// a pass without listing errors) is forgotten.
    async fn held_back(&self, report: &Report) -> RedisResult<HashMap<String, Duration>> {
        let key = &self.partitions.namespace().reconcile_dead;
        let dead: HashMap<String, String> = redis::cmd("HGETALL").arg(key).query_async(&mut self.con.clone()).await?;
        if dead.is_empty() {
            return Ok(HashMap::new());
        }
        let drifted: HashSet<String> = report.drift.iter().map(Drift::dedup_id).collect();
        if report.errors.is_empty() {
            let converged: Vec<&String> = dead.keys().filter(|m| !drifted.contains(*m)).collect();
            if !converged.is_empty() {
                let _: i64 = redis::cmd("HDEL").arg(key).arg(&converged).query_async(&mut self.con.clone()).await?;
            }
        }
        let interval = self.settings.interval.max(Duration::from_secs(1));
        let now = now_ms();
        Ok(dead
            .into_iter()
            .filter(|(meeting, _)| drifted.contains(meeting))
            .filter_map(|(meeting, value)| {
                let (n, at) = crate::handlers::reconcile::parse_dead(&value)?;
                let delay = interval.saturating_mul(1u32 << n.saturating_sub(1).min(20)).min(MAX_HOLD_BACK);
                let until = at.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                (now < until).then(|| (meeting, Duration::from_millis(until - now)))
            })
            .collect())
    }

    async fn pass_v2(&self, from: &str, to: &str, report: &mut Report) -> Result<(), String> {
        let mut calendars_failed = Vec::new();
        let calendars: Vec<V2Calendar> = follow(
            "v2 calendars",
            |cursor| async move {
                let mut query = vec![("limit", "100")];
                if let Some(c) = &cursor {
                    query.push(("cursor", c.as_str()));
                }
                let page: Option<V2Page<V2Calendar>> = self.read(&["v2", "calendars"], &query).await?;
                let page = page.ok_or("GET /v2/calendars answered 404")?;
                Ok((page.data, page.cursor))
            },
            &mut calendars_failed,
        )
        .await;
        if calendars.is_empty() && !calendars_failed.is_empty() {
            return Err(calendars_failed.join("; "));
        }
        report.errors.extend(calendars_failed);
        for calendar in calendars.iter().filter(|c| is_uuid(&c.calendar_id)) {
            report.calendars += 1;
            let id = calendar.calendar_id.as_str();
            let what = format!("v2 calendar {id}");
            let events: Vec<V2Event> = follow(
                &what,
                |cursor| async move {
                    let mut query =
                        vec![("limit", "250"), ("show_cancelled", "true"), ("start_date", from), ("end_date", to)];
                    if let Some(c) = &cursor {
                        query.push(("cursor", c.as_str()));
                    }
                    let page: Option<V2Page<V2Event>> = self.read(&["v2", "calendars", id, "events"], &query).await?;
                    let page = page.ok_or("the calendar is gone (404)")?;
                    Ok((page.data, page.cursor))
                },
                &mut report.errors,
            )
            .await;
            report.events += events.len();
            for e in events.into_iter().filter(|e| is_uuid(&e.event_id)) {
                let facts = Facts { owner_organises: true, ..e.event.facts() };
                if let Some(kind) = drift_of(facts, self.policy, true) {
                    let series_id = e.event.series_id.filter(|s| is_uuid(s));
                    report.drift.push(Drift {
                        api: ApiVersion::V2,
                        calendar_id: id.to_string(),
                        event_id: e.event_id,
                        series_id,
                        kind,
                    });
                }
            }
        }
        Ok(())
    }

    async fn pass_v1(&self, from: &str, to: &str, report: &mut Report) -> Result<(), String> {
        let calendars: Vec<V1Calendar> =
            self.read(&["calendars", ""], &[]).await?.ok_or("GET /calendars/ answered 404")?;
        for calendar in calendars.iter().filter(|c| !c.uuid.trim().is_empty()) {
            report.calendars += 1;
            let id = calendar.uuid.as_str();
            let what = format!("v1 calendar {id}");
            let events: Vec<V1Event> = follow(
                &what,
                |cursor| async move {
                    let mut query = vec![("calendar_id", id), ("start_date_gte", from), ("start_date_lte", to)];
                    if let Some(c) = &cursor {
                        query.push(("cursor", c.as_str()));
                    }
                    let page: Option<V1Page> = self.read(&["calendar_events", ""], &query).await?;
                    let page = page.ok_or("the calendar is gone (404)")?;
                    Ok((page.data, page.next))
                },
                &mut report.errors,
            )
            .await;
            report.events += events.len();
            for e in events.into_iter().filter(|e| !e.uuid.trim().is_empty()) {
                if let Some(kind) = drift_of(e.event.facts(), self.policy, false) {
                    report.drift.push(Drift {
                        api: ApiVersion::V1,
                        calendar_id: id.to_string(),
                        event_id: e.uuid,
                        series_id: None,
                        kind,
                    });
                }
            }
        }
        Ok(())
    }

    /// One `hookstream.reconcile` entry, in the partition its dedup identity names.
    async fn append(&self, drift: &Drift) -> RedisResult<String> {
        use shared::entry::{DEDUP_ID, EVENT as EVENT_FIELD, PAYLOAD, RECEIVED_AT, REQUEST_ID, SOURCE};
        let dedup_id = drift.dedup_id();
        let (keys, _) = self.partitions.of(&dedup_id);
        let mut payload = json!({"api": name(drift.api), "calendar_id": drift.calendar_id, "event_id": drift.event_id});
        if let Some(series_id) = &drift.series_id {
            payload["series_id"] = json!(series_id);
        }
        redis::cmd("XADD")
            .arg(&keys.events)
            .arg("*")
            .arg(EVENT_FIELD)
            .arg(EVENT)
            .arg(SOURCE)
            .arg("reconciler")
            .arg(DEDUP_ID)
            .arg(&dedup_id)
            .arg(PAYLOAD)
            .arg(payload.to_string())
            .arg(RECEIVED_AT)
            .arg(crate::clock::timestamp())
            .arg(REQUEST_ID)
            .arg(format!("reconcile-{}", now_ms()))
            .query_async(&mut self.con.clone())
            .await
    }

    /// Records a pass for `processor status` (`{ns}:reconcile:last`) and the metrics.
    async fn record(&self, report: &Result<Report, String>) {
        let ok = report.as_ref().is_ok_and(|r| r.errors.is_empty());
        crate::metrics::reconcile_run(ok);
        let mut cmd = redis::cmd("HSET");
        cmd.arg(last_key(&self.namespace)).arg("at").arg(crate::clock::timestamp()).arg("result").arg(if ok {
            "ok"
        } else {
            "error"
        });
        match report {
            Ok(r) => {
                for d in &r.drift {
                    crate::metrics::reconcile_drift(name(d.api), d.kind.label());
                }
                cmd.arg("duration_ms")
                    .arg(r.duration.as_millis() as u64)
                    .arg("calendars")
                    .arg(r.calendars)
                    .arg("events")
                    .arg(r.events)
                    .arg("drift")
                    .arg(r.drift.len())
                    .arg("error")
                    .arg(r.errors.join("; "));
            }
            Err(why) => {
                cmd.arg("error").arg(why);
            }
        }
        let _: RedisResult<i64> = cmd.query_async(&mut self.con.clone()).await;
    }

    /// Every interval (jittered), takes the lease — or, holding it already, renews it — and runs
    /// a pass; until aborted. While the pass runs the lease is renewed, so a pass longer than
    /// the interval never lets another replica start a second one; a replica reconciling alone
    /// keeps the interval (it does not find its own lease and skip).
    pub async fn run(self, holder: String) {
        let interval = self.settings.interval;
        if interval.is_zero() {
            return;
        }
        let lease = Lease {
            key: self.partitions.namespace().reconcile_lease.clone(),
            holder,
            ttl: interval,
            con: self.con.clone(),
        };
        loop {
            tokio::time::sleep(crate::clock::jitter(interval, 0.1)).await;
            if !matches!(lease.take().await, Ok(true)) {
                continue; // another replica reconciles this interval (or Redis is down)
            }
            let report = {
                let pass = self.traced_pass();
                tokio::pin!(pass);
                loop {
                    tokio::select! {
                        report = &mut pass => break report,
                        _ = tokio::time::sleep(interval / 3) => { let _ = lease.take().await; }
                    }
                }
            };
            match &report {
                Ok(r) => tracing::info!(
                    calendars = r.calendars,
                    events = r.events,
                    drift = r.drift.len(),
                    held_back = r.held_back,
                    errors = r.errors.len(),
                    duration_ms = r.duration.as_millis() as u64,
                    "reconcile pass done"
                ),
                Err(why) => tracing::warn!(error = %why, "reconcile pass failed: cannot list"),
            }
            self.record(&report).await;
        }
    }
}

/// The reconciler's lease `{ns}:reconcile`: one replica reconciles per interval.
struct Lease {
    key: String,
    holder: String,
    ttl: Duration,
    con: Conn,
}

/// Takes the lease when free, renews it when this holder has it; `1` when it is this holder's.
const LEASE_SCRIPT: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

impl Lease {
    async fn take(&self) -> RedisResult<bool> {
        let taken: i64 = redis::Script::new(LEASE_SCRIPT)
            .key(&self.key)
            .arg(&self.holder)
            .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(taken == 1)
    }
}

/// `{ns}:reconcile:last`: the last pass, for `processor status`.
pub fn last_key(ns: &str) -> String {
    format!("{{{ns}}}:reconcile:last")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::decision::Status;

    #[test]
    fn apis_setting() {
        assert_eq!("auto".parse(), Ok(Apis::Auto));
        assert_eq!("none".parse(), Ok(Apis::These(vec![])));
        assert_eq!("v2".parse(), Ok(Apis::These(vec![ApiVersion::V2])));
        assert_eq!("V1, v2".parse(), Ok(Apis::These(vec![ApiVersion::V1, ApiVersion::V2])));
        assert!("v3".parse::<Apis>().is_err());
    }

    #[test]
    fn drift_from_listed_state() {
        let facts = Facts {
            status: Status::Confirmed,
            has_url: true,
            started: false,
            ended: false,
            owner_organises: true,
            has_bot: false,
        };
        assert_eq!(drift_of(facts, RecordPolicy::All, false), Some(DriftKind::MissingBot));
        assert_eq!(drift_of(Facts { has_bot: true, ..facts }, RecordPolicy::All, false), None);
        let cancelled = Facts { status: Status::Cancelled, has_bot: true, ..facts };
        assert_eq!(drift_of(cancelled, RecordPolicy::All, false), Some(DriftKind::ExtraBot));
        assert_eq!(drift_of(facts, RecordPolicy::None, true), None);
        // Organizer on v2: a scheduled bot on an event that may not be the owner's is a candidate.
        assert_eq!(
            drift_of(Facts { has_bot: true, ..facts }, RecordPolicy::Organizer, true),
            Some(DriftKind::ExtraBot)
        );
    }
}
