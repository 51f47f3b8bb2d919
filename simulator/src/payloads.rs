//! What the simulated Meeting BaaS says, as JSON: the API's resources (calendars, events,
//! bots, shaped as the OpenAPI documents say) and the webhooks it sends. One home for every
//! shape: [`crate::api`] answers with them, [`crate::sim`] and [`crate::timeline`] send them.

use crate::world::{v1_time, v2_time, Account, Api, Bot, BotStatus, Calendar, Meeting};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

pub fn v2_calendar(c: &Calendar) -> Value {
    json!({"calendar_id": c.id, "calendar_platform": "google", "account_email": c.email, "status": c.status,
        "synced_at": v2_time(c.created_at), "created_at": v2_time(c.created_at)})
}

pub fn v1_calendar(c: &Calendar) -> Value {
    json!({"uuid": c.id, "email": c.email, "google_id": c.email, "name": c.email, "resource_id": null})
}

pub fn status(m: &Meeting) -> &'static str {
    if m.cancelled {
        "cancelled"
    } else {
        "confirmed"
    }
}

/// A v2 event as `GET /v2/calendars/{id}/events` lists it.
pub fn v2_listed(m: &Meeting) -> Value {
    json!({"series_id": m.series_id, "event_type": "one_off", "event_id": m.id, "title": m.title,
        "start_time": v2_time(m.start), "end_time": v2_time(m.end), "status": status(m), "is_exception": false,
        "meeting_url": m.meeting_url, "meeting_platform": "meet", "calendar_id": m.calendar_id,
        "bot_scheduled": m.bot_id.is_some(), "created_at": v2_time(m.created_at)})
}

/// A v2 event's details, as `GET /v2/calendars/{id}/events/{event_id}` answers them. The
/// calendar's owner organises every simulated meeting.
pub fn v2_details(m: &Meeting, email: &str) -> Value {
    json!({"event_id": m.id, "series_id": m.series_id, "event_type": "one_off", "title": m.title,
        "description": null, "location": null, "start_time": v2_time(m.start), "end_time": v2_time(m.end),
        "timezone": "UTC", "is_all_day": false, "status": status(m), "organizer_email": email,
        "organizer_name": null,
        "attendees": [{"email": email, "name": null, "response_status": "accepted", "organizer": true, "self": true}],
        "meeting_url": m.meeting_url, "meeting_platform": "meet", "calendar_id": m.calendar_id,
        "calendar_platform": "google", "bot_scheduled": m.bot_id.is_some(),
        "raw_payload": {"id": m.id, "status": status(m), "summary": m.title},
        "created_at": v2_time(m.created_at), "updated_at": v2_time(m.updated_at)})
}

pub fn bot_status(b: &Bot) -> &'static str {
    match b.status {
        BotStatus::Scheduled => "queued",
        BotStatus::InCall => "in_call_recording",
        BotStatus::Completed => "completed",
        BotStatus::Failed => "failed",
    }
}

pub fn v2_bot(b: &Bot) -> Value {
    let duration = b.ended_at.zip(b.joined_at).map(|(e, j)| (e - j).num_seconds().max(0));
    json!({"bot_id": b.id, "bot_name": b.bot_name, "meeting_url": b.meeting_url, "meeting_platform": "meet",
        "extra": null, "duration": duration, "created_at": v2_time(b.created_at),
        "ended_at": b.ended_at.map(v2_time), "joined_at": b.joined_at.map(v2_time),
        "exited_at": b.ended_at.map(v2_time), "status": bot_status(b), "error_code": null,
        "error_message": null, "tokens": null})
}

/// A v1 calendar event, as `GET /calendar_events/{uuid}` answers it.
pub fn v1_event(m: &Meeting, account: &Account) -> Value {
    let email = account.calendar(Api::V1, &m.calendar_id).map(|c| c.email.clone()).unwrap_or_default();
    let bot_param = m.bot_id.as_ref().and_then(|id| account.bot(id)).map(|b| {
        json!({"bot_name": b.bot_name, "extra": {"bot_id": b.id}, "transcription_custom_parameters": {},
            "webhook_url": ""})
    });
    json!({"uuid": m.id, "calendar_uuid": m.calendar_id, "google_id": m.id, "name": m.title,
        "meeting_url": m.meeting_url, "start_time": v1_time(m.start), "end_time": v1_time(m.end),
        "is_organizer": true, "is_recurring": false, "recurring_event_id": null, "deleted": m.cancelled,
        "last_updated_at": v1_time(m.updated_at), "attendees": [{"email": email, "name": null}],
        "raw": {"id": m.id, "summary": m.title}, "bot_param": bot_param})
}

/// A bot's final webhook: v2 `bot.completed` / `bot.failed`, v1 `complete` / `failed`.
pub fn final_webhook(bot: &Bot, meeting: Option<&Meeting>) -> Value {
    let ended = bot.ended_at.unwrap_or(bot.created_at);
    let joined = bot.joined_at.unwrap_or(ended);
    let media = |kind: &str| format!("https://simulator.invalid/recordings/{}/{kind}", bot.id);
    match bot.api {
        Api::V2 => {
            let event = if bot.status == BotStatus::Failed { "bot.failed" } else { "bot.completed" };
            json!({"event": event, "data": {"bot_id": bot.id, "event_id": meeting.map(|m| m.id.clone()),
                "participants": [{"name": "Simulated participant", "id": 1}],
                "speakers": [{"name": "Simulated participant", "id": 1}],
                "duration_seconds": (ended - joined).num_seconds().max(0),
                "joined_at": v1_time(joined), "exited_at": v1_time(ended), "data_deleted": false,
                "video": media("video.mp4"), "audio": media("audio.flac"),
                "transcription": media("transcription.json")}})
        }
        Api::V1 => {
            let event = if bot.status == BotStatus::Failed { "failed" } else { "complete" };
            json!({"event": event, "data": {"bot_id": bot.id, "event_uuid": meeting.map(|m| m.id.clone()),
                "transcript": [], "speakers": ["Simulated participant"], "mp4": media("recording.mp4"),
                "audio": media("recording.wav")}})
        }
    }
}

/// The calendar webhook about one meeting: v2 `event` (created / cancelled), v1
/// `calendar.sync_events` naming it.
///
/// `stamp` is a v1 sync's `last_updated_ts` ([`crate::world::Account::sync_stamp`]).
pub fn calendar_webhook(m: &Meeting, event: &str, stamp: DateTime<Utc>) -> Value {
    match m.api {
        Api::V1 => {
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

/// A v2 calendar's connection changing to its `status` now: `calendar.connection_error` for
/// `error` (with `message`), `calendar.connection_updated` otherwise.
pub fn connection_changed(c: &Calendar, message: &str) -> Value {
    let now = v2_time(Utc::now());
    let mut data = json!({"calendar_id": c.id, "calendar_platform": "google", "account_email": c.email,
        "status": c.status, "created_at": v2_time(c.created_at), "updated_at": now});
    if c.status == "error" {
        data["error"] = json!(message);
        return json!({"event": "calendar.connection_error", "data": data});
    }
    json!({"event": "calendar.connection_updated", "data": data})
}

/// A v2 calendar's `calendar.connection_created`.
pub fn connection_created(c: &Calendar) -> Value {
    json!({"event": "calendar.connection_created", "data": {"calendar_id": c.id,
        "calendar_platform": "google", "account_email": c.email, "status": "active",
        "created_at": v2_time(c.created_at)}})
}
