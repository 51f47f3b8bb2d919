//! Meeting BaaS's side over time: calendars connect (v2 `calendar.connection_created`), meetings
//! are created on them (v2 `calendar.event_created`, v1 `calendar.sync_events`), some are
//! cancelled before they start (v2 `calendar.event_cancelled`, v1 `calendar.sync_events`),
//! bots join when their meeting starts and end when it ends, and each ended bot's result is
//! sent (v2 `bot.completed`, v1 `complete`). An outage can be planned too.

use crate::payloads::final_webhook;
use crate::sim::Simulator;
use crate::world::{Api, BotStatus};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
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

/// Runs the plan until the task is dropped.
pub async fn run(sim: Arc<Simulator>, plan: Plan) {
    let started = Instant::now();
    for _ in 0..plan.v2_calendars {
        sim.connect(Api::V2);
    }
    for _ in 0..plan.v1_calendars {
        sim.connect(Api::V1);
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
                    sim.connect(Api::V2);
                }
                next_calendar = Some(at + every);
            }
        }
        if let (Some(at), Some(every)) = (next_meeting, plan.meeting_every) {
            if Instant::now() >= at && !paused {
                if let Some(meeting) = sim.create_meeting(plan.lead, plan.length, turn) {
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
            sim.cancel(&id);
        }
        bots_move(&sim, &plan);
    }
}

/// Bots join meetings that started and end with meetings that ended; each ended bot's final
/// webhook is sent.
fn bots_move(sim: &Simulator, plan: &Plan) {
    let now = Utc::now();
    let finals: Vec<_> = {
        let mut account = sim.world.lock();
        let times: HashMap<String, (DateTime<Utc>, DateTime<Utc>)> =
            account.meetings.iter().map(|m| (m.id.clone(), (m.start, m.end))).collect();
        let mut ended = Vec::new();
        for bot in account.bots.iter_mut() {
            let Some(&(start, end)) = times.get(&bot.meeting_id) else { continue };
            if bot.status == BotStatus::Scheduled && start <= now {
                bot.status = BotStatus::InCall;
                bot.joined_at = Some(start);
            }
            if bot.status == BotStatus::InCall && end <= now {
                let failed = plan.fail_share > 0.0 && fastrand::f64() < plan.fail_share;
                bot.status = if failed { BotStatus::Failed } else { BotStatus::Completed };
                bot.ended_at = Some(now);
                ended.push(bot.clone());
            }
        }
        ended
            .into_iter()
            .map(|b| {
                let body = final_webhook(&b, account.meeting(&b.meeting_id));
                (b, body)
            })
            .collect()
    };
    for (bot, body) in finals {
        println!("simulator: {} bot {} ended ({:?})", bot.api.name(), bot.id, bot.status);
        sim.webhooks.send(bot.api, body);
    }
}
