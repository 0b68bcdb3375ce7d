//! The cluster webhook tests' side of [`Receiver`]: nodes that may deliver to 127.0.0.1, a
//! webhook known to have reached every node, and the events received so far.
#![allow(dead_code)] // Each webhook test uses a different subset.

use std::time::Duration;

use serde_json::Value;

use herald::locks::MutexExt;

use crate::cluster_helpers::{eventually, start_node_with, Database, Node, Redis};
use crate::helpers::APP_ID;
use crate::webhooks::Receiver;

/// A Redis, a database and nodes named `names` on them, each allowed to deliver webhooks to
/// 127.0.0.1 (started one after the other).
pub async fn nodes_with_webhooks(names: &[&str]) -> (Redis, Database, Vec<Node>) {
    let database = Database::create().await;
    let redis = Redis::start().await;
    let env = [("HERALD_WEBHOOK_ALLOW_PRIVATE", "127.0.0.0/8")];
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(start_node_with(name, &redis, &database, &env).await);
    }
    (redis, database, nodes)
}

/// Adds a webhook of the default app for `events` to `receiver` in the store, then waits until
/// every node reports a probe channel it occupied (so has the webhook).
pub async fn add_webhook_on_every_node(
    receiver: &Receiver,
    database: &Database,
    nodes: &[Node],
    events: &[&str],
) {
    let store = herald::tenants::Store::open(&database.url, herald::clock::Clock::system())
        .await
        .expect("the store opens");
    store
        .create_webhook(herald::tenants::NewWebhook {
            app_id: APP_ID.into(),
            url: receiver.url.clone(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            channel_prefix: None,
            headers: Vec::new(),
        })
        .await
        .expect("webhook is added");
    for (n, node) in nodes.iter().enumerate() {
        // A new channel per attempt: subscribing the same one again within the vacate delay
        // would be a comeback, which reports no channel_occupied.
        let attempt = std::sync::atomic::AtomicUsize::new(0);
        eventually(
            "the node has the webhook",
            Duration::from_secs(10),
            || async {
                let probe = format!(
                    "probe-{n}-{}",
                    attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let mut client = node.connect().await;
                client.subscribe(&probe).await;
                client.close().await;
                crate::helpers::pause(Duration::from_millis(300)).await;
                count(&received(receiver), "channel_occupied", &probe, None) > 0
            },
        )
        .await;
    }
}

/// The webhook events received so far, flattened.
pub fn received(receiver: &Receiver) -> Vec<Value> {
    receiver
        .log
        .lock_or_recover()
        .iter()
        .flat_map(|request| {
            serde_json::from_str::<Value>(&request.body).expect("JSON")["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// How many of `events` are `name` on `channel` (and for `user`, if given).
pub fn count(events: &[Value], name: &str, channel: &str, user: Option<&str>) -> usize {
    events
        .iter()
        .filter(|e| {
            e["name"] == name
                && e["channel"] == channel
                && user.is_none_or(|user| e["user_id"] == user)
        })
        .count()
}
