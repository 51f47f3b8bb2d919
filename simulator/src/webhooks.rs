//! Meeting BaaS's side of a webhook: v2 signed with a `whsec_` secret (Standard Webhooks:
//! `webhook-id`, `webhook-timestamp`, `webhook-signature`), v1 carrying the API key
//! (`x-meeting-baas-api-key`). A webhook the ingress does not take (no answer, or not 2xx) is
//! sent again a few times, 1 s apart and doubling, as Meeting BaaS retries (it does for hours;
//! the simulator for about a minute). A share of them is never sent, on request.

use crate::world::{Api, World};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Attempts per webhook: 1 s, 2 s, 4 s, 8 s, 16 s, 32 s apart.
const ATTEMPTS: u32 = 7;

/// A Standard Webhooks signature (`v1,<base64 HMAC-SHA256>`) of `{id}.{ts}.{body}` with a
/// `whsec_` secret, as Meeting BaaS signs a v2 webhook; `None` when the secret is not base64.
pub fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> Option<String> {
    let key = BASE64.decode(secret.trim_start_matches("whsec_")).ok()?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    Some(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// `url` for printing: its user and password (if any) replaced by `***`.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".into(),
    }
}

/// Now, in Unix seconds (a webhook's timestamp).
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Where webhooks go, and how they are made genuine.
#[derive(Clone)]
pub struct Webhooks {
    world: Arc<World>,
    client: reqwest::Client,
    /// The ingress's webhook URL; `None`: webhooks are not sent (counted as dropped).
    pub url: Option<String>,
    /// v1 webhooks carry it as `x-meeting-baas-api-key`.
    pub api_key: Option<String>,
    /// v2 webhooks are signed with it; without one they are sent unsigned.
    pub secret: Option<String>,
}

impl Webhooks {
    pub fn new(world: Arc<World>, url: Option<String>, api_key: Option<String>, secret: Option<String>) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self { world, client, url, api_key, secret }
    }

    /// Sends `body` in the background (with its retries), unless the drop share says it is
    /// lost. Prints one line per webhook: sent, dropped, or given up on.
    pub fn send(&self, api: Api, body: Value) {
        let event = body.get("event").and_then(Value::as_str).unwrap_or("?").to_string();
        let dropped = {
            let mut account = self.world.lock();
            let share = account.misbehaviour.drop_webhooks_share;
            let dropped = self.url.is_none() || (share > 0.0 && fastrand::f64() < share);
            if dropped {
                account.stats.webhooks_dropped += 1;
            }
            dropped
        };
        if dropped {
            if self.url.is_some() {
                println!("simulator: webhook {event} ({}) NOT sent (dropped on purpose)", api.name());
            }
            return;
        }
        let this = self.clone();
        tokio::spawn(async move { this.deliver(api, &event, body).await });
    }

    async fn deliver(&self, api: Api, event: &str, body: Value) {
        let Some(url) = &self.url else { return };
        let bytes = body.to_string().into_bytes();
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let mut delay = Duration::from_secs(1);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let mut request = self.client.post(url).header("content-type", "application/json").body(bytes.clone());
            match api {
                Api::V1 => {
                    if let Some(key) = &self.api_key {
                        request = request.header("x-meeting-baas-api-key", key);
                    }
                }
                Api::V2 => {
                    // Each attempt is signed anew, with its own timestamp and the same id.
                    let ts = unix_now();
                    request = request.header("webhook-id", &id).header("webhook-timestamp", ts.to_string());
                    if let Some(signature) = self.secret.as_deref().and_then(|s| sign(s, &id, ts, &bytes)) {
                        request = request.header("webhook-signature", signature);
                    }
                }
            }
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    self.world.lock().stats.webhooks_sent += 1;
                    println!("simulator: webhook {event} ({}) sent, attempt {attempt}: {}", api.name(), r.status());
                    return;
                }
                Ok(r) => last = format!("answered {}", r.status()),
                // Without its URL: a webhook URL may carry credentials.
                Err(e) => last = format!("not delivered: {}", e.without_url()),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        self.world.lock().stats.webhooks_failed += 1;
        println!("simulator: webhook {event} ({}) given up after {ATTEMPTS} attempts ({last})", api.name());
    }
}
