//! A Meeting BaaS simulator — stripe-mock's idea for this API — and the fake HTTP server the
//! tests script: one implementation for both.
//!
//! - [`server`]: an HTTP server that records every call, answers scripted routes, and hands
//!   the rest to a fallback.
//! - [`world`]: the simulated account (calendars, meetings, bots, misbehaviour).
//! - [`api`]: the v1 and v2 endpoints hookstream calls, answered from the account, plus the
//!   control routes (`/_sim/...`).
//! - [`webhooks`]: Meeting BaaS's side of a webhook (v2 signed, v1 with the API key).
//! - [`timeline`]: calendars and meetings over time, bots that join and end, results sent.
//!
//! The binary (`simulator`) runs the API with its timeline, or a sink that prints what a
//! `FORWARD_URL` receives; see `docs/simulator.md`.

pub mod api;
pub mod server;
pub mod timeline;
pub mod webhooks;
pub mod world;

pub use api::Simulator;
pub use server::{Call, FakeApi, Gate, Reply};
pub use world::{Api, World};

use std::sync::Arc;

impl Simulator {
    /// A simulator with an empty account.
    pub fn new(api_key: Option<String>, webhook_url: Option<String>, webhook_secret: Option<String>) -> Arc<Self> {
        let world = Arc::new(World::new());
        let webhooks = webhooks::Webhooks::new(world.clone(), webhook_url, api_key.clone(), webhook_secret);
        Arc::new(Self { world, webhooks, api_key })
    }

    /// Makes `server` answer as Meeting BaaS wherever no script says otherwise.
    pub fn install(self: &Arc<Self>, server: &FakeApi) {
        let sim = self.clone();
        server.fallback(Arc::new(move |call| sim.answer(call)));
    }
}
