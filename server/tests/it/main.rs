#![allow(unreachable_pub)]
//! Herald's integration tests: one binary. Every test spawns the real server on port 0 with a
//! fresh SQLite store and speaks raw JSON over tokio-tungstenite and signed HTTP. The signing here
//! is written again from the contract (not borrowed from `herald::auth`), so a bug there cannot
//! hide behind the same bug here.

mod helpers;

mod audit;
mod cli;
mod cli_webhooks;
mod cluster;
mod cluster_conn;
mod cluster_daily;
mod cluster_helpers;
mod cluster_ops;
mod cluster_ops_console;
mod cluster_ops_signin;
mod cluster_ops_usage;
mod cluster_order;
mod cluster_presence;
mod cluster_quota;
mod cluster_resilience;
mod cluster_users;
mod cluster_users_bounds;
mod cluster_webhooks_delay;
mod cluster_xhr;
mod dashboard_access;
mod dashboard_cluster;
mod dashboard_helpers;
mod dashboard_invitations;
mod dashboard_members;
mod dashboard_pages;
mod dashboard_roles;
mod dashboard_signin;
mod hardening_http;
mod hardening_signin;
mod hardening_store;
mod hardening_tenancy;
mod hardening_webhooks;
mod layers;
mod limits;
mod mercure;
mod mercure_bridge;
mod mercure_cluster;
mod mercure_cluster_history;
mod mercure_cluster_subs;
mod mercure_direct;
mod mercure_helpers;
mod mercure_settings;
mod metrics;
mod php;
mod process;
mod proxy;
mod quota;
mod rest_channels;
mod rest_helpers;
mod rest_http;
mod rest_signing;
mod rest_trigger;
mod shutdown;
mod signup;
mod signup_helpers;
mod socket;
mod source_rules;
mod store;
mod store_sessions;
mod tls;
mod webhook_receiver;
mod webhooks;
mod webhooks_cluster;
mod wire;
mod xhr;
mod xhr_lines;
