#![allow(unreachable_pub)]
//! Herald's integration tests: one binary. Every test spawns the real server on port 0 with a
//! fresh SQLite store and speaks raw JSON over tokio-tungstenite and signed HTTP. The signing here
//! is written again from the contract (not borrowed from `herald::auth`), so a bug there cannot
//! hide behind the same bug here.

mod helpers;

mod cli;
mod dashboard;
mod hardening_http;
mod hardening_signin;
mod hardening_store;
mod hardening_tenancy;
mod hardening_webhooks;
mod limits;
mod php;
mod process;
mod quota;
mod rest;
mod socket;
mod source_rules;
mod store;
mod webhooks;
mod wire;
