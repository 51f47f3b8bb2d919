//! The tests' fake HTTP APIs (Meeting BaaS, or a forward target): the simulator's server
//! ([`simulator::server`]), scripted per route, with the simulated Meeting BaaS API behind the
//! routes a test does not script where a test asks for it ([`FakeApi::serve_results`]). One
//! implementation for the tests and for the `simulator` users run.

use serde_json::json;
pub use simulator::server::{Call, FakeApi, Fallback, Gate, Reply, CALL_LOG_PATH};
use simulator::Simulator;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A v1 API for `uuids` that answers 503 to everything while `down` is set; otherwise every
/// event is upcoming and a POST schedules its bot (counted per meeting). `calls_while_down`
/// counts the calls that reached it during the outage.
pub struct FlakyV1 {
    pub api: FakeApi,
    pub down: Arc<AtomicBool>,
    pub bots: Arc<Mutex<HashMap<String, usize>>>,
    pub calls_while_down: Arc<AtomicUsize>,
}

pub async fn flaky_v1(uuids: &[String]) -> FlakyV1 {
    let api = FakeApi::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let bots: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let calls_while_down = Arc::new(AtomicUsize::new(0));
    let upcoming = crate::fixture_json("meeting-baas/api/v1_calendar_event_upcoming.json");
    for uuid in uuids {
        let (d, c, b, u, event) =
            (down.clone(), calls_while_down.clone(), bots.clone(), uuid.clone(), upcoming.clone());
        api.route("GET", &format!("/calendar_events/{uuid}"), move |_, _| {
            if d.load(Ordering::SeqCst) {
                c.fetch_add(1, Ordering::SeqCst);
                return Reply::status(503);
            }
            let mut e = event.clone();
            e["uuid"] = json!(u);
            if b.lock().unwrap().contains_key(&u) {
                e["bot_param"] = json!({"bot_name": "hookstream recorder"});
            }
            Reply::json(200, serde_json::to_vec(&e).unwrap())
        });
        let (d, c, b, u) = (down.clone(), calls_while_down.clone(), bots.clone(), uuid.clone());
        api.route("POST", &format!("/calendar_events/{uuid}/bot"), move |_, _| {
            if d.load(Ordering::SeqCst) {
                c.fetch_add(1, Ordering::SeqCst);
                return Reply::status(503);
            }
            *b.lock().unwrap().entry(u.clone()).or_default() += 1;
            Reply::json(200, crate::fixture("meeting-baas/api/v1_schedule_response.json"))
        });
    }
    FlakyV1 { api, down, bots, calls_while_down }
}

/// A v2 bot that ended, as Meeting BaaS lists it (`GET /v2/bots`) and resends its final webhook.
#[derive(Debug, Clone)]
pub struct EndedBot {
    pub bot_id: String,
    /// `completed` or `failed`.
    pub status: &'static str,
    /// RFC 3339 UTC, seconds (`2026-12-07T10:00:00Z`).
    pub ended_at: String,
}

impl EndedBot {
    /// A bot that ended `ago` before now.
    pub fn ended(bot_id: &str, status: &'static str, ago: Duration) -> Self {
        let ended = chrono::Utc::now() - chrono::Duration::from_std(ago).unwrap_or_default();
        Self { bot_id: bot_id.to_string(), status, ended_at: ended.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }
    }

    /// Its final webhook (`bot.completed` / `bot.failed`), the fixture with its id.
    pub fn final_webhook(&self) -> Vec<u8> {
        let (event, fixture) = match self.status {
            "failed" => ("bot.failed", "meeting-baas/v2/bot_failed.json"),
            _ => ("bot.completed", "meeting-baas/v2/bot_completed.json"),
        };
        let mut body = crate::fixture_json(fixture);
        body["event"] = json!(event);
        body["data"]["bot_id"] = json!(self.bot_id);
        serde_json::to_vec(&body).unwrap()
    }
}

/// What [`FakeApi::serve_results`] serves: the simulator's account.
#[derive(Clone)]
pub struct Results {
    pub sim: Arc<Simulator>,
}

impl Results {
    /// The bots whose final webhook was asked for again, in order.
    pub fn resent(&self) -> Vec<String> {
        self.sim.world.lock().resent.clone()
    }
}

/// [`FakeApi::serve_results`]: a trait, as `FakeApi` is the simulator's type.
pub trait ServeResults {
    fn serve_results(&self, bots: Vec<EndedBot>, ingress: String, secret: String) -> Results;
}

impl ServeResults for FakeApi {
    /// Serves Meeting BaaS's side of results (SPEC §4.5) from the simulator, with `bots` in its
    /// account: `GET /v2/bots` lists them with the filters hookstream sends (`status`,
    /// `ended_after`), in pages of `limit`; `POST /v2/bots/{bot_id}/resend-webhook` answers 200
    /// and, as Meeting BaaS does, sends the bot's final webhook again — a new message id, newly
    /// signed with `secret` — to `ingress` (the webhook URL). An unknown bot is a 404.
    fn serve_results(&self, bots: Vec<EndedBot>, ingress: String, secret: String) -> Results {
        let sim = Simulator::new(None, Some(ingress), Some(secret));
        {
            let mut account = sim.world.lock();
            for b in bots {
                let ended = chrono::DateTime::parse_from_rfc3339(&b.ended_at)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or_else(|_| chrono::Utc::now());
                account.add_ended_bot(&b.bot_id, b.status == "failed", ended);
            }
        }
        sim.install(self);
        Results { sim }
    }
}
