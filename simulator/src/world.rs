//! What the simulated Meeting BaaS account holds: calendars, their meetings, the bots on them,
//! and the misbehaviour asked for. One lock around all of it: the API, the timeline and the
//! control routes read and change it from different tasks.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The Meeting BaaS API version a calendar lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V1,
    V2,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::V1 => "v1",
            Api::V2 => "v2",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Calendar {
    pub api: Api,
    pub id: String,
    pub email: String,
    /// v2 connection status: `active`, `error`, `revoked`, `permission_denied`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Meeting {
    pub api: Api,
    pub id: String,
    pub series_id: String,
    pub calendar_id: String,
    pub title: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub cancelled: bool,
    pub meeting_url: String,
    /// The bot scheduled on it, if any (a bot unscheduled is removed).
    pub bot_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a bot is: scheduled (waiting for its meeting), in the call, or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotStatus {
    Scheduled,
    InCall,
    Completed,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Bot {
    pub api: Api,
    pub id: String,
    pub meeting_id: String,
    pub calendar_id: String,
    pub bot_name: String,
    pub meeting_url: String,
    pub status: BotStatus,
    pub created_at: DateTime<Utc>,
    pub joined_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl Bot {
    pub fn ended(&self) -> bool {
        matches!(self.status, BotStatus::Completed | BotStatus::Failed)
    }
}

/// Counters a user watches (`GET /_sim/state`).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub webhooks_sent: u64,
    /// Never sent, on purpose (`--drop-webhooks-share`).
    pub webhooks_dropped: u64,
    /// Sent, and not accepted by the ingress after every retry.
    pub webhooks_failed: u64,
    pub api_calls: u64,
    pub answered_down: u64,
    pub answered_429: u64,
    /// Calendar webhooks not sent because their calendar's connection was not `active`.
    pub webhooks_unsynced: u64,
    pub bots_scheduled: u64,
    pub bots_unscheduled: u64,
}

/// Misbehaviour on request.
#[derive(Debug, Clone, Default)]
pub struct Misbehaviour {
    /// The API answers 503 to every call until then.
    pub down_until: Option<Instant>,
    /// The share of API calls answered 429 (with `Retry-After`).
    pub rate_limit_share: f64,
    /// The share of webhooks never sent.
    pub drop_webhooks_share: f64,
}

#[derive(Debug, Default)]
pub struct Account {
    pub calendars: Vec<Calendar>,
    pub meetings: Vec<Meeting>,
    pub bots: Vec<Bot>,
    pub stats: Stats,
    pub misbehaviour: Misbehaviour,
    /// The bots whose final webhook was asked for again (`resend-webhook`), in order.
    pub resent: Vec<String>,
    /// Each v1 calendar's last `last_updated_ts` sent: a sync webhook's identity includes it,
    /// so two syncs of one calendar never share one.
    pub synced: std::collections::HashMap<String, DateTime<Utc>>,
    /// The timeline creates no meeting and connects no calendar (bots still join and end).
    pub paused: bool,
}

impl Account {
    pub fn meeting(&self, id: &str) -> Option<&Meeting> {
        self.meetings.iter().find(|m| m.id == id)
    }

    pub fn meeting_mut(&mut self, id: &str) -> Option<&mut Meeting> {
        self.meetings.iter_mut().find(|m| m.id == id)
    }

    pub fn bot(&self, id: &str) -> Option<&Bot> {
        self.bots.iter().find(|b| b.id == id)
    }

    pub fn calendar(&self, api: Api, id: &str) -> Option<&Calendar> {
        self.calendars.iter().find(|c| c.api == api && c.id == id)
    }

    /// A v1 calendar's sync time for a webhook sent now: later than its last one.
    pub fn sync_stamp(&mut self, calendar_id: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        // Whole milliseconds, as the stamp is written.
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let stamp = match self.synced.get(calendar_id).copied() {
            Some(last) if last >= now => last + chrono::Duration::milliseconds(1),
            _ => now,
        };
        self.synced.insert(calendar_id.to_string(), stamp);
        stamp
    }

    pub fn is_down(&self) -> bool {
        self.misbehaviour.down_until.is_some_and(|until| Instant::now() < until)
    }

    /// Schedules a bot on `meeting_id`; `None` when it has one already or does not exist.
    pub fn schedule(&mut self, meeting_id: &str, bot_name: &str, now: DateTime<Utc>) -> Option<String> {
        let meeting = self.meeting(meeting_id)?;
        if meeting.bot_id.is_some() {
            return None;
        }
        let bot = Bot {
            api: meeting.api,
            id: uuid::Uuid::new_v4().to_string(),
            meeting_id: meeting.id.clone(),
            calendar_id: meeting.calendar_id.clone(),
            bot_name: bot_name.to_string(),
            meeting_url: meeting.meeting_url.clone(),
            // A bot scheduled on a meeting already under way joins at once.
            status: if meeting.start <= now { BotStatus::InCall } else { BotStatus::Scheduled },
            created_at: now,
            joined_at: (meeting.start <= now).then_some(now),
            ended_at: None,
        };
        let id = bot.id.clone();
        self.bots.push(bot);
        if let Some(m) = self.meeting_mut(meeting_id) {
            m.bot_id = Some(id.clone());
            m.updated_at = now;
        }
        self.stats.bots_scheduled += 1;
        Some(id)
    }

    /// Adds a v2 bot that ended at `ended_at` on no meeting of this account: a recording made
    /// before the simulator started, whose result a test wants asked for again.
    pub fn add_ended_bot(&mut self, id: &str, failed: bool, ended_at: DateTime<Utc>) {
        self.bots.push(Bot {
            api: Api::V2,
            id: id.to_string(),
            meeting_id: String::new(),
            calendar_id: String::new(),
            bot_name: "recorder".into(),
            meeting_url: "https://meet.example.com/abc-defg-hij".into(),
            status: if failed { BotStatus::Failed } else { BotStatus::Completed },
            created_at: ended_at - chrono::Duration::minutes(30),
            joined_at: Some(ended_at - chrono::Duration::minutes(29)),
            ended_at: Some(ended_at),
        });
    }

    /// Removes the bot of `meeting_id`; `false` when it had none.
    pub fn unschedule(&mut self, meeting_id: &str, now: DateTime<Utc>) -> bool {
        let Some(bot_id) = self.meeting_mut(meeting_id).and_then(|m| {
            m.updated_at = now;
            m.bot_id.take()
        }) else {
            return false;
        };
        self.bots.retain(|b| b.id != bot_id);
        self.stats.bots_unscheduled += 1;
        true
    }

    /// The account in numbers (`GET /_sim/state`). Converged, for the demo: every meeting not
    /// yet started is as its calendar says — a bot on each wanted one (`upcoming_missing_bot`
    /// 0), none on a cancelled one (`upcoming_extra_bot` 0).
    pub fn summary(&self, now: DateTime<Utc>) -> Value {
        let upcoming: Vec<&Meeting> = self.meetings.iter().filter(|m| m.start > now).collect();
        let missing = upcoming.iter().filter(|m| !m.cancelled && m.bot_id.is_none()).count();
        let extra = upcoming.iter().filter(|m| m.cancelled && m.bot_id.is_some()).count();
        let ended = self.bots.iter().filter(|b| b.ended()).count();
        let recorded = self.meetings.iter().filter(|m| m.start <= now && m.bot_id.is_some()).count();
        let unrecorded = self.meetings.iter().filter(|m| m.start <= now && !m.cancelled && m.bot_id.is_none()).count();
        let s = &self.stats;
        json!({
            "calendars": self.calendars.len(),
            "meetings": self.meetings.len(),
            "upcoming": upcoming.len(),
            "upcoming_missing_bot": missing,
            "upcoming_extra_bot": extra,
            "started_with_bot": recorded,
            "started_without_bot": unrecorded,
            "bots": self.bots.len(),
            "bots_ended": ended,
            "bots_scheduled_total": s.bots_scheduled,
            "bots_unscheduled_total": s.bots_unscheduled,
            "results_resent_total": self.resent.len(),
            "webhooks_sent_total": s.webhooks_sent,
            "webhooks_dropped_total": s.webhooks_dropped,
            "webhooks_failed_total": s.webhooks_failed,
            "webhooks_unsynced_total": s.webhooks_unsynced,
            "calendars_not_active": self.calendars.iter().filter(|c| c.status != "active").count(),
            "api_calls_total": s.api_calls,
            "api_answered_down_total": s.answered_down,
            "api_answered_429_total": s.answered_429,
            "api_down": self.is_down(),
            "paused": self.paused,
            "rate_limit_share": self.misbehaviour.rate_limit_share,
            "drop_webhooks_share": self.misbehaviour.drop_webhooks_share,
        })
    }
}

/// The account behind a lock.
#[derive(Debug, Default)]
pub struct World(Mutex<Account>);

impl World {
    pub fn new() -> Self {
        Self::default()
    }

    /// The account, locked (a poisoned lock still holds a usable account).
    pub fn lock(&self) -> MutexGuard<'_, Account> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The API answers 503 for `secs` from now (`0` ends an outage).
    pub fn outage(&self, secs: u64) {
        self.lock().misbehaviour.down_until = (secs > 0).then(|| Instant::now() + Duration::from_secs(secs));
    }

    /// Creates a calendar (id, a made-up owner) in `api`.
    pub fn add_calendar(&self, api: Api) -> Calendar {
        let mut account = self.lock();
        let n = account.calendars.len() + 1;
        let calendar = Calendar {
            api,
            id: uuid::Uuid::new_v4().to_string(),
            email: format!("owner{n}@simulator.example"),
            status: "active".into(),
            created_at: Utc::now(),
        };
        account.calendars.push(calendar.clone());
        calendar
    }
}

/// RFC 3339 UTC with milliseconds, as the v2 API writes times.
pub fn v2_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339 UTC with seconds, as the v1 API writes times.
pub fn v1_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
