//! The live figures the dashboard shows: connections per node and today's messages, in a
//! cluster summed over every node.

use herald_dashboard::{Admin, NodeConnections};

use super::AdminApi;

impl AdminApi {
    /// Each app's open connections and, in a cluster, every node's share (this node's live,
    /// the others' as of their last heartbeat; this node's alone when Redis does not answer).
    /// Node ids are the operator's: a tenant admin sees "node 1", "node 2", …
    pub(super) async fn cluster_connections(
        &self,
        admin: &Admin,
        app_ids: &[&str],
    ) -> Vec<(u64, Vec<NodeConnections>)> {
        let local: Vec<u64> = app_ids.iter().map(|id| self.connections(id)).collect();
        let Some(cluster) = &self.node.cluster else {
            return local.into_iter().map(|n| (n, Vec::new())).collect();
        };
        let mut by_node = cluster
            .connections_by_node(app_ids)
            .await
            .unwrap_or_else(|| vec![Vec::new(); app_ids.len()]);
        by_node.resize(app_ids.len(), Vec::new());
        local
            .into_iter()
            .zip(by_node)
            .map(|(mine, nodes)| {
                let mut per_node: Vec<NodeConnections> = nodes
                    .into_iter()
                    .filter(|n| n.node_id != cluster.node_id() && n.connections > 0)
                    .map(|n| NodeConnections {
                        node_id: n.node_id,
                        connections: n.connections,
                    })
                    .collect();
                if mine > 0 {
                    per_node.push(NodeConnections {
                        node_id: cluster.node_id().to_owned(),
                        connections: mine,
                    });
                }
                per_node.sort_by(|a, b| a.node_id.cmp(&b.node_id));
                if !admin.operator {
                    for node in &mut per_node {
                        node.node_id = cluster.node_label(&node.node_id);
                    }
                }
                (per_node.iter().map(|n| n.connections).sum(), per_node)
            })
            .collect()
    }

    /// Today's messages of each of `app_ids` (in that order). On a single node: its counter
    /// (the store's total as of the last flush and what it counted since). In a cluster: the
    /// store's total (`stored`, or read now), plus the other nodes' unflushed counts from Redis,
    /// plus this node's own, live, in that order ([`crate::cluster::unflushed`] says why
    /// nothing is counted twice); the store's total and this node's alone when Redis does not
    /// answer in 500 ms. Never below this node's own counter.
    pub(super) async fn messages_today(
        &self,
        app_ids: &[&str],
        stored: Option<Vec<u64>>,
    ) -> Vec<u64> {
        let usage = &self.node.usage;
        let own = |id: &str| usage.app(id).messages_today();
        let Some(cluster) = &self.node.cluster else {
            return app_ids.iter().map(|id| own(id)).collect();
        };
        let day = usage.clock().day();
        let stored = match stored {
            Some(stored) => stored,
            None => match self.node.store.day_messages(day, app_ids).await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::warn!(%error, "could not read today's stored message counts: the dashboard shows this node's");
                    return app_ids.iter().map(|id| own(id)).collect();
                }
            },
        };
        let elsewhere = cluster.unflushed_elsewhere(day, app_ids).await;
        app_ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let counter = usage.app(id);
                let others = elsewhere.as_ref().and_then(|e| e.get(n)).copied();
                stored
                    .get(n)
                    .copied()
                    .unwrap_or(0)
                    .saturating_add(others.unwrap_or(0))
                    .saturating_add(counter.unflushed())
                    .max(counter.messages_today())
            })
            .collect()
    }
}
