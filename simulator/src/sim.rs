//! The simulated Meeting BaaS: its account, the webhooks it sends, and what it does on its own
//! side — connect a calendar, create a meeting, cancel one — each with its webhook. The
//! timeline ([`crate::timeline`]) does these over time; a test or a control route
//! ([`crate::api`]) does them at the moment it chooses.

use crate::payloads;
use crate::webhooks::Webhooks;
use crate::world::{v2_time, Api, Calendar, Meeting, World};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

/// The simulated account, its webhooks, and what the API expects of its callers.
pub struct Simulator {
    pub world: Arc<World>,
    pub webhooks: Webhooks,
    /// Calls without this `x-meeting-baas-api-key` are answered 401 (`None`: any key).
    pub api_key: Option<String>,
}

impl Simulator {
    /// A simulator with an empty account.
    pub fn new(api_key: Option<String>, webhook_url: Option<String>, webhook_secret: Option<String>) -> Arc<Self> {
        let world = Arc::new(World::new());
        let webhooks = Webhooks::new(world.clone(), webhook_url, api_key.clone(), webhook_secret);
        Arc::new(Self { world, webhooks, api_key })
    }

    /// Connects a new calendar in `api` (v2: and sends its `calendar.connection_created`).
    pub fn connect(&self, api: Api) -> Calendar {
        let calendar = self.world.add_calendar(api);
        println!("simulator: {} calendar {} connected ({})", api.name(), calendar.id, calendar.email);
        if api == Api::V2 {
            self.webhooks.send(api, payloads::connection_created(&calendar));
        }
        calendar
    }

    /// A new meeting on the `turn`th calendar (in turn), starting `lead` from now and lasting
    /// `length`, and its webhook.
    pub fn create_meeting(&self, lead: Duration, length: Duration, turn: usize) -> Option<Meeting> {
        let now = Utc::now();
        let meeting = {
            let mut account = self.world.lock();
            if account.calendars.is_empty() {
                return None;
            }
            let calendar = account.calendars[turn % account.calendars.len()].clone();
            let start = now + lead;
            let meeting = Meeting {
                api: calendar.api,
                id: uuid::Uuid::new_v4().to_string(),
                series_id: uuid::Uuid::new_v4().to_string(),
                calendar_id: calendar.id,
                title: TITLES[turn % TITLES.len()].to_string(),
                start,
                end: start + length,
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
        self.send_calendar(&meeting, "calendar.event_created");
        Some(meeting)
    }

    /// Cancels meeting `id` and sends its webhook.
    pub fn cancel(&self, id: &str) {
        let meeting = {
            let mut account = self.world.lock();
            let Some(m) = account.meeting_mut(id) else { return };
            m.cancelled = true;
            m.updated_at = Utc::now();
            m.clone()
        };
        println!("simulator: {} meeting {} cancelled", meeting.api.name(), meeting.id);
        self.send_calendar(&meeting, "calendar.event_cancelled");
    }

    /// The connection statuses a v2 calendar can have.
    pub const CONNECTION_STATUSES: [&'static str; 4] = ["active", "error", "revoked", "permission_denied"];

    /// Changes v2 calendar `id`'s connection to `status` (one of [`Self::CONNECTION_STATUSES`])
    /// and sends its `calendar.connection_updated` / `_error`. While it is not `active` its
    /// calendar webhooks stop (its meetings still change: a broken sync, not a quiet calendar).
    /// `None`: no such v2 calendar.
    pub fn set_connection(&self, id: &str, status: &str) -> Option<Calendar> {
        let calendar = {
            let mut account = self.world.lock();
            let calendar = account.calendars.iter_mut().find(|c| c.api == Api::V2 && c.id == id)?;
            calendar.status = status.to_string();
            calendar.clone()
        };
        println!("simulator: v2 calendar {} connection {status}", calendar.id);
        self.webhooks.send(Api::V2, payloads::connection_changed(&calendar, "OAuth token refresh failed (simulated)"));
        Some(calendar)
    }

    /// Sends the calendar webhook about `meeting` (a v1 sync gets its next stamp), unless its
    /// calendar's connection is broken.
    fn send_calendar(&self, meeting: &Meeting, event: &str) {
        let stamp = {
            let mut account = self.world.lock();
            let status = account.calendar(meeting.api, &meeting.calendar_id).map(|c| c.status.clone());
            if let Some(status) = status.filter(|s| s != "active") {
                account.stats.webhooks_unsynced += 1;
                drop(account);
                println!(
                    "simulator: webhook {event} about {} NOT sent: its calendar's connection is {status}",
                    meeting.id
                );
                return;
            }
            account.sync_stamp(&meeting.calendar_id, meeting.updated_at)
        };
        self.webhooks.send(meeting.api, payloads::calendar_webhook(meeting, event, stamp));
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
