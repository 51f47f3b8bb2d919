//! One pass: list the calendars and their events, find the drift, append one
//! `hookstream.reconcile` entry per drifted meeting (see the module docs of `reconcile`).

use super::settings::{Apis, Settings};
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
    pub(super) con: Conn,
    pub(super) partitions: Partitions,
    policy: RecordPolicy,
    pub(super) settings: Settings,
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
    pub fn new(api: Api, con: Conn, partitions: Partitions, policy: RecordPolicy, settings: Settings) -> Self {
        let reads =
            WriteLimiter::new(partitions.namespace().reconcile_reads.clone(), con.clone(), settings.reads_per_sec);
        Self { api, reads, con, partitions, policy, settings, traces: None }
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
