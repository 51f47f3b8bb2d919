//! The Meeting BaaS endpoints hookstream calls, answered from the [`World`]: v2 calendars,
//! events (listed with `start_date`/`end_date` and a cursor, and one by one), calendar bots
//! (create, delete), bots (listed with `status`/`ended_after` and a cursor) and
//! `resend-webhook`; v1 calendars, calendar events (listed with paging, and one by one) and
//! their bot (schedule, unschedule). Answers follow the published OpenAPI documents (a test
//! validates them). Every call needs `x-meeting-baas-api-key` when the simulator has a key.
//!
//! Control routes, for a user or a test (no key needed; docs/simulator.md): `GET /_sim/state`,
//! `GET /_sim/bots`, `GET /_sim/calendars`, `POST /_sim/outage?secs=N`,
//! `POST /_sim/misbehave?rate_limit_share=F&drop_webhooks_share=F`, `POST /_sim/pause`,
//! `POST /_sim/resume`, `POST /_sim/meetings?count=N&lead_secs=S&length_secs=L`,
//! `POST /_sim/calendars/{id}/connection?status=revoked` (a v2 calendar's connection breaks, or
//! with `active` comes back).

use crate::payloads::{bot_status, final_webhook, v1_calendar, v1_event, v2_bot, v2_calendar, v2_details, v2_listed};
use crate::server::{Call, FakeApi, Reply};
use crate::sim::Simulator;
use crate::world::{v2_time, Account, Api, Bot, Calendar, Meeting};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Answers of the v2 error shape (`ErrorResponse`).
fn v2_error(status: u16, code: &str, message: &str) -> Reply {
    let error = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Error",
    };
    // A 400 is a `ValidationErrorResponse`, which has no `details`.
    let mut body = json!({"success": false, "error": error, "code": code, "statusCode": status, "message": message});
    if status != 400 {
        body["details"] = Value::Null;
    }
    Reply::value(status, &body)
}

/// A listing's page: `cursor` is the offset of the page (a string, as the API's cursors are
/// opaque), `limit` its size.
fn page<T: Clone>(items: &[T], call: &Call, default_limit: usize) -> Result<(Vec<T>, Option<String>), Reply> {
    let offset = match call.param("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => c.parse::<usize>().map_err(|_| v2_error(400, "FST_ERR_VALIDATION", "cursor is not valid"))?,
    };
    let limit = match call.param("limit") {
        None => default_limit,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=250).contains(l))
            .ok_or_else(|| v2_error(400, "FST_ERR_VALIDATION", "limit must be between 1 and 250"))?,
    };
    let slice: Vec<T> = items.iter().skip(offset).take(limit).cloned().collect();
    let next = (offset + limit < items.len()).then(|| (offset + limit).to_string());
    Ok((slice, next))
}

/// A v2 listing's answer: one page of `items` (see [`page`]) as `to_json` shapes each, with
/// the cursor of the next.
fn v2_page<T: Copy>(items: &[T], call: &Call, to_json: impl Fn(T) -> Value) -> Reply {
    match page(items, call, 50) {
        Err(e) => e,
        Ok((items, next)) => {
            let data: Vec<Value> = items.into_iter().map(to_json).collect();
            Reply::value(200, &json!({"success": true, "data": data, "cursor": next, "prev_cursor": null}))
        }
    }
}

fn time_param(call: &Call, name: &str) -> Result<Option<DateTime<Utc>>, Reply> {
    match call.param(name) {
        None => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(&v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| v2_error(400, "FST_ERR_VALIDATION", &format!("{name} is not an ISO 8601 time"))),
    }
}

impl Simulator {
    /// Makes `server` answer as Meeting BaaS wherever no script says otherwise.
    pub fn install(self: &Arc<Self>, server: &FakeApi) {
        let sim = self.clone();
        server.fallback(Arc::new(move |call| sim.answer(call)));
    }

    /// Answers `call`, or `None` for a route the simulator does not serve (a 404).
    pub fn answer(&self, call: &Call) -> Option<Reply> {
        let path: Vec<&str> = call.path.trim_start_matches('/').split('/').collect();
        if path.first() == Some(&"_sim") {
            return self.control(call, &path[1..]);
        }
        let known = matches!(path.first(), Some(&"v2") | Some(&"calendars") | Some(&"calendar_events"));
        if !known {
            return None;
        }
        let mut account = self.world.lock();
        account.stats.api_calls += 1;
        if let Some(key) = &self.api_key {
            if call.header("x-meeting-baas-api-key") != Some(key.as_str()) {
                return Some(v2_error(401, "UNAUTHORIZED", "missing or wrong x-meeting-baas-api-key"));
            }
        }
        if account.is_down() {
            account.stats.answered_down += 1;
            return Some(v2_error(503, "SERVICE_UNAVAILABLE", "the simulator is in an outage (asked for)"));
        }
        let share = account.misbehaviour.rate_limit_share;
        if share > 0.0 && fastrand::f64() < share {
            account.stats.answered_429 += 1;
            let body = if path.first() == Some(&"v2") {
                json!({"success": false, "error": "Too Many Requests", "code": "FST_ERR_TOO_MANY_REQUESTS",
                    "statusCode": 429, "message": "Rate limit reached (the simulator's --rate-limit-share)",
                    "details": null, "retryAfter": 1})
            } else {
                json!({"error": "Too Many Requests"})
            };
            return Some(Reply::value(429, &body).header("retry-after", "1"));
        }
        let now = Utc::now();
        let reply = match (call.method.as_str(), path.as_slice()) {
            ("GET", ["v2", "calendars"]) => self.v2_calendars(&account, call),
            ("GET", ["v2", "calendars", cid, "events"]) => v2_events(&account, cid, call),
            ("GET", ["v2", "calendars", cid, "events", eid]) => v2_event(&account, cid, eid),
            ("POST", ["v2", "calendars", cid, "bots"]) => v2_schedule(&mut account, cid, call, now),
            ("DELETE", ["v2", "calendars", cid, "bots"]) => v2_unschedule(&mut account, cid, call, now),
            ("GET", ["v2", "bots"]) => v2_bots(&account, call),
            ("POST", ["v2", "bots", bot_id, "resend-webhook"]) => {
                let bot = account.bot(bot_id).cloned();
                match bot {
                    None => v2_error(404, "BOT_NOT_FOUND", "no such bot"),
                    Some(bot) if !bot.ended() => v2_error(409, "BOT_NOT_ENDED", "the bot has not ended yet"),
                    Some(bot) => {
                        account.resent.push(bot.id.clone());
                        let body = final_webhook(&bot, account.meeting(&bot.meeting_id));
                        drop(account);
                        self.webhooks.send(bot.api, body);
                        Reply::value(200, &json!({"success": true, "data": {"message": "Final webhook resent"}}))
                    }
                }
            }
            ("GET", ["calendars", ""]) => {
                let list: Vec<Value> = account.calendars.iter().filter(|c| c.api == Api::V1).map(v1_calendar).collect();
                Reply::value(200, &Value::from(list))
            }
            ("GET", ["calendar_events", ""]) => v1_events(&account, call),
            ("GET", ["calendar_events", uuid]) => match account.meeting(uuid).filter(|m| m.api == Api::V1) {
                Some(m) => Reply::value(200, &v1_event(m, &account)),
                None => Reply::value(404, &json!({"error": "event not found"})),
            },
            ("POST", ["calendar_events", uuid, "bot"]) => v1_bot(&mut account, uuid, true, call, now),
            ("DELETE", ["calendar_events", uuid, "bot"]) => v1_bot(&mut account, uuid, false, call, now),
            _ => return None,
        };
        Some(reply)
    }

    fn v2_calendars(&self, account: &Account, call: &Call) -> Reply {
        let all: Vec<&Calendar> = account.calendars.iter().filter(|c| c.api == Api::V2).collect();
        v2_page(&all, call, v2_calendar)
    }

    fn control(&self, call: &Call, path: &[&str]) -> Option<Reply> {
        let reply = match (call.method.as_str(), path) {
            ("GET", ["state"]) => Reply::value(200, &self.world.lock().summary(Utc::now())),
            ("GET", ["bots"]) => {
                let account = self.world.lock();
                let bots: Vec<Value> = account
                    .bots
                    .iter()
                    .map(|b| {
                        json!({"api": b.api.name(), "bot_id": b.id, "meeting_id": b.meeting_id,
                            "calendar_id": b.calendar_id, "status": bot_status(b), "ended_at": b.ended_at.map(v2_time)})
                    })
                    .collect();
                Reply::value(200, &Value::from(bots))
            }
            ("GET", ["calendars"]) => {
                let account = self.world.lock();
                let calendars: Vec<Value> = account
                    .calendars
                    .iter()
                    .map(|c| json!({"api": c.api.name(), "calendar_id": c.id, "email": c.email, "status": c.status}))
                    .collect();
                Reply::value(200, &Value::from(calendars))
            }
            ("POST", ["calendars", id, "connection"]) => match call.param("status") {
                Some(status) if Simulator::CONNECTION_STATUSES.contains(&status.as_str()) => {
                    match self.set_connection(id, &status) {
                        Some(c) => Reply::value(200, &json!({"calendar_id": c.id, "status": c.status})),
                        None => Reply::value(404, &json!({"error": "no such v2 calendar"})),
                    }
                }
                _ => Reply::value(400, &json!({"error": "status must be active, error, revoked or permission_denied"})),
            },
            ("POST", [verb @ ("pause" | "resume")]) => {
                self.world.lock().paused = *verb == "pause";
                eprintln!("simulator: timeline {verb}d (asked for)");
                Reply::value(200, &json!({"paused": *verb == "pause"}))
            }
            ("POST", ["meetings"]) => {
                let number = |name: &str, default: u64| -> Option<u64> {
                    call.param(name).map_or(Some(default), |v| v.parse::<u64>().ok())
                };
                match (number("count", 1), number("lead_secs", 300), number("length_secs", 30)) {
                    (Some(count), Some(lead), Some(length)) if count <= 1000 && length > 0 => {
                        let (lead, length) = (Duration::from_secs(lead), Duration::from_secs(length));
                        let mut made = Vec::new();
                        for _ in 0..count {
                            let turn = self.world.lock().meetings.len();
                            if let Some(m) = self.create_meeting(lead, length, turn) {
                                made.push(
                                    json!({"api": m.api.name(), "meeting_id": m.id, "calendar_id": m.calendar_id}),
                                );
                            }
                        }
                        Reply::value(200, &Value::from(made))
                    }
                    _ => Reply::value(
                        400,
                        &json!({"error": "count (at most 1000), lead_secs and length_secs (> 0) are whole numbers"}),
                    ),
                }
            }
            ("POST", ["outage"]) => match call.param("secs").map(|s| s.parse::<u64>()) {
                Some(Ok(secs)) => {
                    self.world.outage(secs);
                    eprintln!("simulator: the API is down for {secs} s (asked for)");
                    Reply::value(200, &json!({"down_for_secs": secs}))
                }
                _ => Reply::value(400, &json!({"error": "secs must be a whole number of seconds"})),
            },
            ("POST", ["misbehave"]) => {
                let share = |name: &str| -> Result<Option<f64>, Reply> {
                    match call.param(name) {
                        None => Ok(None),
                        Some(v) => {
                            v.parse::<f64>().ok().filter(|s| (0.0..=1.0).contains(s)).map(Some).ok_or_else(|| {
                                Reply::value(400, &json!({"error": format!("{name} must be a share from 0 to 1")}))
                            })
                        }
                    }
                };
                match (share("rate_limit_share"), share("drop_webhooks_share")) {
                    (Err(e), _) | (_, Err(e)) => e,
                    (Ok(rate), Ok(drop)) => {
                        let mut account = self.world.lock();
                        let m = &mut account.misbehaviour;
                        if let Some(rate) = rate {
                            m.rate_limit_share = rate;
                        }
                        if let Some(drop) = drop {
                            m.drop_webhooks_share = drop;
                        }
                        eprintln!(
                            "simulator: rate_limit_share={} drop_webhooks_share={} (asked for)",
                            m.rate_limit_share, m.drop_webhooks_share
                        );
                        Reply::value(
                            200,
                            &json!({"rate_limit_share": m.rate_limit_share,
                            "drop_webhooks_share": m.drop_webhooks_share}),
                        )
                    }
                }
            }
            _ => return None,
        };
        Some(reply)
    }
}

fn v2_events(account: &Account, cid: &str, call: &Call) -> Reply {
    if account.calendar(Api::V2, cid).is_none() {
        return v2_error(404, "CALENDAR_NOT_FOUND", "no such calendar");
    }
    let (from, to) = match (time_param(call, "start_date"), time_param(call, "end_date")) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let show_cancelled = call.param("show_cancelled").as_deref() == Some("true");
    let listed: Vec<&Meeting> = account
        .meetings
        .iter()
        .filter(|m| m.api == Api::V2 && m.calendar_id == cid)
        .filter(|m| show_cancelled || !m.cancelled)
        .filter(|m| from.is_none_or(|f| m.start >= f) && to.is_none_or(|t| m.start <= t))
        .collect();
    v2_page(&listed, call, v2_listed)
}

fn v2_event(account: &Account, cid: &str, eid: &str) -> Reply {
    let Some(calendar) = account.calendar(Api::V2, cid) else {
        return v2_error(404, "CALENDAR_NOT_FOUND", "no such calendar");
    };
    match account.meeting(eid).filter(|m| m.api == Api::V2 && m.calendar_id == cid) {
        Some(m) => Reply::value(200, &json!({"success": true, "data": v2_details(m, &calendar.email)})),
        None => v2_error(404, "EVENT_NOT_FOUND", "no such event"),
    }
}

/// The instance a calendar-bots call names: the body's `event_id` and its meeting in calendar
/// `cid`, if any; or the 404 (no such calendar) or 400 (no `event_id`) it earns.
fn v2_instance(account: &Account, cid: &str, call: &Call) -> Result<(String, Option<Meeting>), Reply> {
    if account.calendar(Api::V2, cid).is_none() {
        return Err(v2_error(404, "CALENDAR_NOT_FOUND", "no such calendar"));
    }
    let event_id = call
        .json()
        .get("event_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| v2_error(400, "FST_ERR_VALIDATION", "body must have an event_id (one instance)"))?;
    let meeting = account.meeting(&event_id).filter(|m| m.api == Api::V2 && m.calendar_id == cid).cloned();
    Ok((event_id, meeting))
}

fn v2_schedule(account: &mut Account, cid: &str, call: &Call, now: DateTime<Utc>) -> Reply {
    let (event_id, meeting) = match v2_instance(account, cid, call) {
        Ok(found) => found,
        Err(e) => return e,
    };
    let bot_name = call.json().get("bot_name").and_then(Value::as_str).unwrap_or("recorder").to_string();
    let refused = |code: &str, message: &str| {
        Reply::value(
            201,
            &json!({"success": true, "data": [], "errors": [{"event_id": event_id, "code": code,
            "message": message, "details": null}]}),
        )
    };
    match meeting {
        None => refused("EVENT_NOT_FOUND", "no such event instance in this calendar"),
        Some(m) if m.bot_id.is_some() => {
            refused("BOT_ALREADY_EXISTS", "A bot is already scheduled for this event instance")
        }
        Some(m) if m.end <= now => refused("EVENT_ENDED", "the event has ended"),
        Some(m) => {
            account.schedule(&m.id, &bot_name, now);
            Reply::value(201, &json!({"success": true, "data": [{"event_id": m.id}], "errors": []}))
        }
    }
}

fn v2_unschedule(account: &mut Account, cid: &str, call: &Call, now: DateTime<Utc>) -> Reply {
    let (_, meeting) = match v2_instance(account, cid, call) {
        Ok(found) => found,
        Err(e) => return e,
    };
    match meeting {
        Some(m) if m.bot_id.is_some() && m.start <= now => {
            v2_error(409, "BOT_ALREADY_STARTED", "the meeting has started; its bot can no longer be changed")
        }
        Some(m) if account.unschedule(&m.id, now) => {
            Reply::value(200, &json!({"success": true, "data": [{"event_id": m.id}], "errors": []}))
        }
        _ => v2_error(404, "BOT_NOT_FOUND", "no bot is scheduled for this event instance"),
    }
}

fn v2_bots(account: &Account, call: &Call) -> Reply {
    let statuses: Vec<String> =
        call.param("status").map(|s| s.split(',').map(str::to_string).collect()).unwrap_or_default();
    let after = match time_param(call, "ended_after") {
        Ok(a) => a,
        Err(e) => return e,
    };
    let listed: Vec<&Bot> = account
        .bots
        .iter()
        .filter(|b| b.api == Api::V2)
        .filter(|b| statuses.is_empty() || statuses.iter().any(|s| s == bot_status(b)))
        .filter(|b| after.is_none_or(|a| b.ended_at.is_some_and(|e| e > a)))
        .collect();
    v2_page(&listed, call, v2_bot)
}

fn v1_events(account: &Account, call: &Call) -> Reply {
    let Some(cid) = call.param("calendar_id") else {
        return Reply::value(400, &json!({"error": "calendar_id is required"}));
    };
    let (from, to) = match (time_param(call, "start_date_gte"), time_param(call, "start_date_lte")) {
        (Ok(from), Ok(to)) => (from, to),
        _ => return Reply::value(400, &json!({"error": "start_date_gte and start_date_lte are ISO 8601 times"})),
    };
    let listed: Vec<&Meeting> = account
        .meetings
        .iter()
        .filter(|m| m.api == Api::V1 && m.calendar_id == cid)
        .filter(|m| from.is_none_or(|f| m.start >= f) && to.is_none_or(|t| m.start <= t))
        .collect();
    match page(&listed, call, 100) {
        Err(_) => Reply::value(400, &json!({"error": "cursor is not valid"})),
        Ok((items, next)) => {
            let data: Vec<Value> = items.into_iter().map(|m| v1_event(m, account)).collect();
            Reply::value(200, &json!({"data": data, "next": next}))
        }
    }
}

fn v1_bot(account: &mut Account, uuid: &str, schedule: bool, call: &Call, now: DateTime<Utc>) -> Reply {
    let Some(meeting) = account.meeting(uuid).filter(|m| m.api == Api::V1).cloned() else {
        return Reply::value(404, &json!({"error": "event not found"}));
    };
    if schedule {
        if meeting.end <= now {
            return Reply::value(400, &json!({"error": "the event has ended"}));
        }
        let bot_name = call.json().get("bot_name").and_then(Value::as_str).unwrap_or("recorder").to_string();
        // Scheduling again keeps the bot there is (the v1 API updates its parameters).
        account.schedule(uuid, &bot_name, now);
    } else {
        account.unschedule(uuid, now);
    }
    let event = account.meeting(uuid).map(|m| v1_event(m, account)).unwrap_or(Value::Null);
    Reply::value(200, &Value::from(vec![event]))
}
