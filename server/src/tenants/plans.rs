//! Plan presets: named sets of limits to create apps from. A plan only fills in the limits at
//! creation; every limit stays editable afterwards, and the limits are what is enforced.

use super::StoreError;
use crate::protocol::Limits;

/// A named preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The name given to `--plan`.
    pub name: &'static str,
    /// One line for lists and the dashboard.
    pub summary: &'static str,
    /// The limits an app created from it starts with.
    pub limits: Limits,
}

const fn plan(
    name: &'static str,
    summary: &'static str,
    connections: u64,
    daily_messages: u64,
    backend_per_second: u64,
    reads_per_second: u64,
    [channels, cache_channels, subscriptions, subscribes]: [u64; 4],
) -> Plan {
    let d = Limits::pusher_defaults();
    Plan {
        name,
        summary,
        limits: Limits {
            max_connections: connections,
            max_daily_messages: daily_messages,
            max_backend_events_per_second: backend_per_second,
            max_read_requests_per_second: reads_per_second,
            max_channels: channels,
            max_cache_channels: cache_channels,
            max_subscriptions_per_connection: subscriptions,
            max_subscribes_per_second: subscribes,
            ..d
        },
    }
}

/// Every plan, smallest first.
pub const PLANS: &[Plan] = &[
    plan(
        "sandbox",
        "100 connections, 200,000 messages a day",
        100,
        200_000,
        10,
        10,
        [500, 50, 100, 10],
    ),
    plan(
        "startup",
        "500 connections, 1,000,000 messages a day",
        500,
        1_000_000,
        100,
        50,
        [2_000, 200, 100, 10],
    ),
    plan(
        "pro",
        "2,000 connections, 4,000,000 messages a day",
        2_000,
        4_000_000,
        500,
        100,
        [10_000, 1_000, 200, 20],
    ),
    plan(
        "business",
        "10,000 connections, 20,000,000 messages a day",
        10_000,
        20_000_000,
        2_000,
        500,
        [50_000, 5_000, 500, 50],
    ),
    plan(
        "unlimited",
        "no connection, message, channel or rate limit (1,000 subscriptions per connection)",
        0,
        0,
        0,
        0,
        [0, 0, 1_000, 0],
    ),
];

impl Plan {
    /// The plan called `name` (case-insensitive).
    pub fn named(name: &str) -> Result<&'static Plan, StoreError> {
        PLANS
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                let names: Vec<&str> = PLANS.iter().map(|p| p.name).collect();
                StoreError::Invalid(format!(
                    "unknown plan {name:?}: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}
