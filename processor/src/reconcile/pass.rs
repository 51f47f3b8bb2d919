//! One pass: list the calendars and their events, find the drift, append one
//! `hookstream.reconcile` entry per drifted meeting (see the module docs of `reconcile`).

use super::settings::{Apis, Settings};
use crate::calendars::Connections;
use crate::clock::now_ms;
use crate::downstream::limiter::WriteLimiter;
use crate::downstream::meeting_baas::{is_uuid, name, Api, ApiVersion};
use crate::handlers::calendar_v1::CalendarEvent;
use crate::handlers::calendar_v2::Current;
use crate::handlers::decision::{decide, Decision, Facts, RecordPolicy};
use crate::handlers::reconcile::EVENT;
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
    /// Ended bots listed by the results pass (SPEC §4.5).
    pub bots: usize,
    /// Bots whose final webhook never came (SPEC §4.5): queued to be resent (or, in a dry run,
    /// found).
    pub missing_results: Vec<String>,
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
    #[serde(default)]
    calendar_platform: Option<String>,
    /// `active`, `error`, `revoked`, `permission_denied` (SPEC §4.6).
    #[serde(default)]
    status: Option<String>,
}

/// A listed v2 bot: what the results pass reads.
#[derive(Deserialize)]
struct V2Bot {
    bot_id: String,
    #[serde(default)]
    ended_at: Option<String>,
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
    pub(super) con: Conn,
    pub(super) partitions: Partitions,
    policy: RecordPolicy,
    pub(super) settings: Settings,
    /// The calendars' connection records (SPEC §4.6).
    pub(super) connections: Connections,
    /// Spans, when tracing is on: one `INTERNAL` span per pass, its API reads inside it.
    pub(super) traces: Option<shared::otel::Traces>,
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
    /// The reconciler: `api` reads (paced at `RECONCILE_READS_PER_SEC` across replicas), `con`
    /// appends the drift's entries.
    pub fn new(
        api: Api,
        con: Conn,
        partitions: Partitions,
        policy: RecordPolicy,
        settings: Settings,
        connections: Connections,
    ) -> Self {
        let reads =
            WriteLimiter::new(partitions.namespace().reconcile_reads.clone(), con.clone(), settings.reads_per_sec);
        Self { api, reads, con, partitions, policy, settings, connections, traces: None }
    }

    /// The window a pass lists: now to now + `RECONCILE_HORIZON_HOURS`, on Redis's clock.
    fn window(&self) -> (String, String) {
        let from = crate::clock::now();
        let to = from + chrono::Duration::from_std(self.settings.horizon).unwrap_or(chrono::Duration::days(7));
        (from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }

    /// Makes a span per pass with `traces` ([`crate::traces`]).
    pub fn with_traces(mut self, traces: Option<shared::otel::Traces>) -> Self {
        self.traces = traces;
        self
    }

    /// The API versions to reconcile now.
    async fn versions(&self) -> RedisResult<Vec<ApiVersion>> {
        match &self.settings.apis {
            Apis::These(versions) => Ok(versions.clone()),
            Apis::Auto => {
                let seen: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
                    .arg(&self.partitions.namespace().reconcile_apis)
                    .query_async(&mut self.con.clone())
                    .await?;
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
        let versions = self.versions().await.map_err(|e| format!("Redis: {e}"))?;
        let (from, to) = self.window();
        // RECORD_POLICY=none: hookstream leaves every bot as it is (results are still asked for).
        for api in versions.iter().filter(|_| self.policy != RecordPolicy::None) {
            match api {
                ApiVersion::V2 => self.pass_v2(&from, &to, dry_run, &mut report).await?,
                ApiVersion::V1 => self.pass_v1(&from, &to, &mut report).await?,
            }
        }
        self.queue_drift(&mut report, dry_run).await?;
        if versions.contains(&ApiVersion::V2) && !self.settings.results_lookback.is_zero() {
            self.pass_results(dry_run, &mut report).await?;
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Appends one entry per drifted meeting of `report` (once per meeting; unless `dry_run`),
    /// except those held back.
    async fn queue_drift(&self, report: &mut Report, dry_run: bool) -> Result<(), String> {
        let mut seen = HashSet::new();
        report.drift.retain(|d| seen.insert((d.api, d.calendar_id.clone(), d.event_id.clone())));
        let held = self.held_back(report).await.map_err(|e| format!("Redis: {e}"))?;
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
        Ok(())
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

    async fn pass_v2(&self, from: &str, to: &str, dry_run: bool, report: &mut Report) -> Result<(), String> {
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
        let listed_all = calendars_failed.is_empty();
        report.errors.extend(calendars_failed);
        let calendars: Vec<V2Calendar> = calendars.into_iter().filter(|c| is_uuid(&c.calendar_id)).collect();
        if !dry_run {
            self.record_connections(&calendars, listed_all).await.map_err(|e| format!("Redis: {e}"))?;
        }
        for calendar in &calendars {
            self.calendar_v2(&calendar.calendar_id, from, to, report).await;
        }
        Ok(())
    }

    /// Keeps `{ns}:calendars` in step with the listed calendars (SPEC §4.6): a status change
    /// that no webhook reported is seen here; a calendar no longer listed (when the whole list
    /// was read) is forgotten.
    async fn record_connections(&self, calendars: &[V2Calendar], listed_all: bool) -> RedisResult<()> {
        for c in calendars {
            let status = c.status.as_deref().unwrap_or("active");
            let platform = c.calendar_platform.as_deref().unwrap_or_default();
            // No catch-up queued: this pass lists the calendar's events right after.
            self.connections.record(&c.calendar_id, status, platform, "", false).await?;
        }
        if listed_all {
            let listed: HashSet<&str> = calendars.iter().map(|c| c.calendar_id.as_str()).collect();
            for (id, _) in self.connections.all().await? {
                if !listed.contains(id.as_str()) {
                    self.connections.remove(&id).await?;
                }
            }
        }
        Ok(())
    }

    /// One v2 calendar's events from `from` to `to`, every page, and their drift.
    async fn calendar_v2(&self, id: &str, from: &str, to: &str, report: &mut Report) {
        report.calendars += 1;
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

    /// Reconciles one v2 calendar now, on its own (a connection back to `active`, SPEC §4.6):
    /// its events listed in the window, its drift appended as a pass does.
    pub async fn calendar_now(&self, id: &str) -> Result<Report, String> {
        let started = Instant::now();
        let mut report = Report::default();
        if self.policy == RecordPolicy::None || !is_uuid(id) {
            return Ok(report);
        }
        let (from, to) = self.window();
        self.calendar_v2(id, &from, &to, &mut report).await;
        self.queue_drift(&mut report, false).await?;
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Results (SPEC §4.5): the v2 bots that ended in the last `RECONCILE_RESULTS_HOURS`, every
    /// page; one that ended more than `RECONCILE_RESULTS_GRACE_SECS` ago and whose final webhook
    /// the ingress never accepted (no dedup key for `bot.completed:{id}` nor `bot.failed:{id}`)
    /// is missing its result. Unless `dry_run`, one `hookstream.resend` entry each, at most once
    /// an hour per bot (`{ns}:resend:<bot_id>`).
    async fn pass_results(&self, dry_run: bool, report: &mut Report) -> Result<(), String> {
        let now = crate::clock::now();
        let lookback =
            chrono::Duration::from_std(self.settings.results_lookback).unwrap_or(chrono::Duration::hours(24));
        let grace = chrono::Duration::from_std(self.settings.results_grace).unwrap_or(chrono::Duration::minutes(10));
        let ended_after = (now - lookback).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let ended_after = ended_after.as_str();
        let mut failed = Vec::new();
        let bots: Vec<V2Bot> = follow(
            "v2 bots",
            |cursor| async move {
                let mut query = vec![("status", "completed,failed"), ("ended_after", ended_after), ("limit", "250")];
                if let Some(c) = &cursor {
                    query.push(("cursor", c.as_str()));
                }
                let page: Option<V2Page<V2Bot>> = self.read(&["v2", "bots"], &query).await?;
                let page = page.ok_or("GET /v2/bots answered 404")?;
                Ok((page.data, page.cursor))
            },
            &mut failed,
        )
        .await;
        report.errors.extend(failed);
        report.bots = bots.len();
        let mut con = self.con.clone();
        for bot in bots.into_iter().filter(|b| is_uuid(&b.bot_id)) {
            let ended = bot.ended_at.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if ended.is_none_or(|t| t.with_timezone(&chrono::Utc) > now - grace) {
                continue; // still in its grace period (or not ended, as far as the API says)
            }
            if self.result_accepted(&mut con, &bot.bot_id).await.map_err(|e| format!("Redis: {e}"))? {
                continue;
            }
            if !dry_run {
                let key = self.partitions.namespace().resend(&bot.bot_id);
                let first: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(3_600_000)
                    .query_async(&mut con)
                    .await
                    .map_err(|e| format!("Redis: {e}"))?;
                if first.is_none() {
                    continue; // asked for within the hour
                }
                tracing::warn!(bot_id = %bot.bot_id, "reconcile: a bot's final webhook never came; asking Meeting BaaS to resend it");
                self.append_resend(&bot.bot_id).await.map_err(|e| format!("Redis: {e}"))?;
            }
            report.missing_results.push(bot.bot_id);
        }
        Ok(())
    }

    /// Whether the ingress accepted a final webhook of `bot_id` (its dedup key is there, in the
    /// partition its identity names).
    async fn result_accepted(&self, con: &mut Conn, bot_id: &str) -> RedisResult<bool> {
        let keys = ["bot.completed", "bot.failed"].map(|event| {
            let (keys, dedup_key) = self.partitions.of(&format!("{event}:{bot_id}"));
            (keys.partition, dedup_key)
        });
        if keys[0].0 == keys[1].0 {
            // One partition (always so with PARTITIONS=1): one EXISTS for both, one round trip.
            let exists: i64 = redis::cmd("EXISTS").arg(&keys[0].1).arg(&keys[1].1).query_async(con).await?;
            return Ok(exists > 0);
        }
        for (_, key) in keys {
            let exists: i64 = redis::cmd("EXISTS").arg(key).query_async(con).await?;
            if exists > 0 {
                return Ok(true);
            }
        }
        Ok(false)
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
        let mut payload = json!({"api": name(drift.api), "calendar_id": drift.calendar_id, "event_id": drift.event_id});
        if let Some(series_id) = &drift.series_id {
            payload["series_id"] = json!(series_id);
        }
        self.append_entry(EVENT, &drift.dedup_id(), &payload).await
    }

    /// One `hookstream.resend` entry for `bot_id` (SPEC §4.5).
    async fn append_resend(&self, bot_id: &str) -> RedisResult<String> {
        let payload = json!({"api": "v2", "bot_id": bot_id});
        self.append_entry(crate::handlers::resend::EVENT, &format!("resend:{bot_id}"), &payload).await
    }

    /// Appends an entry of the reconciler's (`source` = `reconciler`), in the partition its
    /// dedup identity names.
    async fn append_entry(&self, event: &str, dedup_id: &str, payload: &serde_json::Value) -> RedisResult<String> {
        use shared::entry::{DEDUP_ID, EVENT as EVENT_FIELD, PAYLOAD, RECEIVED_AT, REQUEST_ID, SOURCE};
        let (keys, _) = self.partitions.of(dedup_id);
        redis::cmd("XADD")
            .arg(&keys.events)
            .arg("*")
            .arg(EVENT_FIELD)
            .arg(event)
            .arg(SOURCE)
            .arg("reconciler")
            .arg(DEDUP_ID)
            .arg(dedup_id)
            .arg(PAYLOAD)
            .arg(payload.to_string())
            .arg(RECEIVED_AT)
            .arg(crate::clock::timestamp())
            .arg(REQUEST_ID)
            .arg(format!("reconcile-{}", now_ms()))
            .query_async(&mut self.con.clone())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::decision::Status;

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
