//! A Meeting BaaS simulator — stripe-mock's idea for this API — and the fake HTTP server the
//! tests script: one implementation for both.
//!
//! - [`server`]: an HTTP server that records every call, answers scripted routes, and hands
//!   the rest to a fallback.
//! - [`world`]: the simulated account (calendars, meetings, bots, misbehaviour).
//! - [`api`]: the v1 and v2 endpoints hookstream calls, answered from the account, plus the
//!   control routes (`/_sim/...`); [`Simulator::install`] puts them behind a server.
//! - [`payloads`]: every JSON shape the simulated Meeting BaaS answers with or sends.
//! - [`webhooks`]: Meeting BaaS's side of a webhook (v2 signed, v1 with the API key).
//! - [`sim`]: the [`Simulator`]: the account, its webhooks, and Meeting BaaS's own actions
//!   (connect a calendar, create or cancel a meeting).
//! - [`timeline`]: calendars and meetings over time, bots that join and end, results sent.
//!
//! The binary (`simulator`) runs the API with its timeline, or a sink that prints what a
//! `FORWARD_URL` receives; see `docs/simulator.md`.

pub mod api;
pub mod payloads;
pub mod server;
pub mod sim;
pub mod timeline;
pub mod webhooks;
pub mod world;

pub use server::{Call, FakeApi, Gate, Reply};
pub use sim::Simulator;
pub use world::{Api, World};
