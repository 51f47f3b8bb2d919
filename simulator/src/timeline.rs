//! Meeting BaaS's side over time: calendars connect (v2 `calendar.connection_created`), meetings
//! are created on them (v2 `calendar.event_created`, v1 `calendar.sync_events`), some are
//! cancelled before they start (v2 `calendar.event_cancelled`, v1 `calendar.sync_events`),
//! bots join when their meeting starts and end when it ends, and each ended bot's result is
//! sent (v2 `bot.completed`, v1 `complete`). An outage can be planned too.

use crate::api::{final_webhook, Simulator};
use crate::world::{v2_time, Api, BotStatus, Meeting};
use chrono::Utc;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the timeline does, and how fast.
#[derive(Debug, Clone)]
pub struct Plan {
    /// v2 calendars connected at the start.
    pub v2_calendars: usize,
    /// v1 calendars at the start.
    pub v1_calendars: usize,
    /// One more v2 calendar connects this often (`None`: only the first ones).
    pub calendar_every: Option<Duration>,
    /// At most this many calendars in all.
    pub max_calendars: usize,
    /// A new meeting this often, on the calendars in turn (`None`: none).
    pub meeting_every: Option<Duration>,
    /// How long after its creation a meeting starts.
    pub lead: Duration,
    /// How long a meeting lasts.
    pub length: Duration,
    /// The share of meetings cancelled (half-way between creation and start).
    pub cancel_share: f64,
    /// The API goes down this long after the start, for this long.
    pub outage: Option<(Duration, Duration)>,
    /// The share of bots that end `failed` rather than `completed`.
    pub fail_share: f64,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            v2_calendars: 2,
            v1_calendars: 1,
            calendar_every: Some(Duration::from_secs(300)),
            max_calendars: 10,
            meeting_every: Some(Duration::from_secs(15)),
            lead: Duration::from_secs(45),
            length: Duration::from_secs(30),
            cancel_share: 0.2,
            outage: None,
            fail_share: 0.0,
        }
    }
}

const TITLES: &[&str] = &[
    "Weekly sync",
    "Design review",
    "Customer call",
    "Sprint planning",
    "1:1",
    "Incident review",
    "Hiring panel",
    "Roadmap check-in",
];

fn meeting_url() -> String {
    let part = |n: usize| (0..n).map(|_| fastrand::lowercase()).collect::<String>();
    format!("https://meet.example.com/{}-{}-{}", part(3), part(4), part(3))
}

/// Runs the plan until the task is dropped.
pub async fn run(sim: Arc<Simulator>, plan: Plan) {
    let started = Instant::now();
    for _ in 0..plan.v2_calendars {
        connect(&sim, Api::V2);
    }
    for _ in 0..plan.v1_calendars {
        connect(&sim, Api::V1);
    }
    let mut next_calendar = plan.calendar_every.map(|every| started + every);
    let mut next_meeting = plan.meeting_every.map(|_| started + Duration::from_secs(2));
    let mut turn = 0usize;
    // Meetings to cancel, and when.
    let mut cancels: Vec<(String, chrono::DateTime<Utc>)> = Vec::new();
    let mut outage = plan.outage;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = Utc::now();
        if let Some((after, length)) = outage {
            if started.elapsed() >= after {
                sim.world.outage(length.as_secs().max(1));
                println!("simulator: the API is down for {} s (--outage-for)", length.as_secs());
                outage = None;
            }
        }
        let paused = sim.world.lock().paused;
        if let (Some(at), Some(every)) = (next_calendar, plan.calendar_every) {
            if Instant::now() >= at && !paused {
                if sim.world.lock().calendars.len() < plan.max_calendars {
                    connect(&sim, Api::V2);
                }
                next_calendar = Some(at + every);
            }
        }
        if let (Some(at), Some(every)) = (next_meeting, plan.meeting_every) {
            if Instant::now() >= at && !paused {
                if let Some(meeting) = create_meeting(&sim, &plan, turn) {
                    turn += 1;
                    if plan.cancel_share > 0.0 && fastrand::f64() < plan.cancel_share {
                        let at = meeting.created_at + (meeting.start - meeting.created_at) / 2;
                        cancels.push((meeting.id.clone(), at));
                    }
                }
                next_meeting = Some(at + every);
            }
        }
        let due: Vec<String> = cancels.iter().filter(|(_, at)| *at <= now).map(|(id, _)| id.clone()).collect();
        cancels.retain(|(_, at)| *at > now);
        for id in due {
            cancel(&sim, &id);
        }
        bots_move(&sim, &plan);
    }
}

fn connect(sim: &Simulator, api: Api) {
    let calendar = sim.world.add_calendar(api);
    println!("simulator: {} calendar {} connected ({})", api.name(), calendar.id, calendar.email);
    if api == Api::V2 {
        sim.webhooks.send(
            api,
            json!({"event": "calendar.connection_created", "data": {"calendar_id": calendar.id,
                "calendar_platform": "google", "account_email": calendar.email, "status": "active",
                "created_at": v2_time(calendar.created_at)}}),
        );
    }
}

/// A new meeting on the `turn`th calendar (in turn), and its webhook.
pub fn create_meeting(sim: &Simulator, plan: &Plan, turn: usize) -> Option<Meeting> {
    let now = Utc::now();
    let meeting = {
        let mut account = sim.world.lock();
        if account.calendars.is_empty() {
            return None;
        }
        let calendar = account.calendars[turn % account.calendars.len()].clone();
        let start = now + plan.lead;
        let meeting = Meeting {
            api: calendar.api,
            id: uuid::Uuid::new_v4().to_string(),
            series_id: uuid::Uuid::new_v4().to_string(),
            calendar_id: calendar.id,
            title: TITLES[turn % TITLES.len()].to_string(),
            start,
            end: start + plan.length,
            cancelled: false,
            meeting_url: meeting_url(),
            bot_id: None,
            created_at: now,
            updated_at: now,
        };
        account.meetings.push(meeting.clone());
        meeting
    };
    println!(
        "simulator: {} meeting {} \"{}\" created on calendar {}, starts {}",
        meeting.api.name(),
        meeting.id,
        meeting.title,
        meeting.calendar_id,
        v2_time(meeting.start)
    );
    sim.webhooks.send(meeting.api, calendar_webhook(sim, &meeting, "calendar.event_created"));
    Some(meeting)
}

/// The calendar webhook about one meeting: v2 `event` (created / cancelled), v1
/// `calendar.sync_events` naming it.
fn calendar_webhook(sim: &Simulator, m: &Meeting, event: &str) -> serde_json::Value {
    match m.api {
        Api::V1 => {
            let stamp = sim.world.lock().sync_stamp(&m.calendar_id, m.updated_at);
            json!({"event": "calendar.sync_events", "data": {"calendar_id": m.calendar_id,
                "last_updated_ts": v2_time(stamp), "affected_event_uuids": [m.id]}})
        }
        Api::V2 => {
            let instance = json!({"event_id": m.id, "start": v2_time(m.start), "end": v2_time(m.end),
                "title": m.title, "status": if m.cancelled { "cancelled" } else { "confirmed" },
                "is_all_day": false, "is_exception": false, "bot_scheduled": m.bot_id.is_some(),
                "meeting_url": m.meeting_url, "meeting_platform": "meet"});
            let list = if m.cancelled { "cancelled_instances" } else { "instances" };
            json!({"event": event, "data": {"calendar_id": m.calendar_id, "event_type": "one_off",
                "series_id": m.series_id, "series_bot_scheduled": false, list: [instance]}})
        }
    }
}

/// Cancels meeting `id` and sends its webhook.
pub fn cancel(sim: &Simulator, id: &str) {
    let meeting = {
        let mut account = sim.world.lock();
        let Some(m) = account.meeting_mut(id) else { return };
        m.cancelled = true;
        m.updated_at = Utc::now();
        m.clone()
    };
    println!("simulator: {} meeting {} cancelled", meeting.api.name(), meeting.id);
    sim.webhooks.send(meeting.api, calendar_webhook(sim, &meeting, "calendar.event_cancelled"));
}

/// Bots join meetings that started and end with meetings that ended; each ended bot's final
/// webhook is sent.
fn bots_move(sim: &Simulator, plan: &Plan) {
    let now = Utc::now();
    let mut finals = Vec::new();
    {
        let mut account = sim.world.lock();
        let meetings: Vec<(String, chrono::DateTime<Utc>, chrono::DateTime<Utc>)> =
            account.meetings.iter().map(|m| (m.id.clone(), m.start, m.end)).collect();
        let times = |id: &str| meetings.iter().find(|(m, _, _)| m == id).map(|(_, s, e)| (*s, *e));
        for bot in account.bots.iter_mut() {
            let Some((start, end)) = times(&bot.meeting_id) else { continue };
            if bot.status == BotStatus::Scheduled && start <= now {
                bot.status = BotStatus::InCall;
                bot.joined_at = Some(start);
            }
            if bot.status == BotStatus::InCall && end <= now {
                let failed = plan.fail_share > 0.0 && fastrand::f64() < plan.fail_share;
                bot.status = if failed { BotStatus::Failed } else { BotStatus::Completed };
                bot.ended_at = Some(now);
                finals.push(bot.clone());
            }
        }
        let finals: Vec<_> =
            finals.iter().map(|b| (b.clone(), final_webhook(b, account.meeting(&b.meeting_id)))).collect();
        drop(account);
        for (bot, body) in finals {
            println!("simulator: {} bot {} ended ({:?})", bot.api.name(), bot.id, bot.status);
            sim.webhooks.send(bot.api, body);
        }
    }
}
