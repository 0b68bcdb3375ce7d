//! Claims on the webhook outbox, so that several nodes sharing one store deliver each row once.
//!
//! A node (a process; `owner` is its random id) delivers only the pending rows it holds: rows
//! whose `claimed_by` is its id and whose lease (`claimed_until`, Unix ms) has not ended. It
//! renews its leases while it holds rows, and releases them on a graceful shutdown; a dead
//! node's rows become claimable when their leases end.
//!
//! The order rule: **an endpoint's pending rows are held by at most one node at a time**, and
//! what that node holds is a prefix, in id order, of the endpoint's pending rows. A node claims
//! rows of an endpoint only while no other node holds a live lease on any of its pending rows,
//! and claims in id order (so a bounded batch takes the oldest); the writer inserts a new row
//! already claimed by its node only when every pending row of that endpoint is that node's
//! (otherwise unclaimed, for the holder's next claim). The worker then keeps the per-channel
//! order inside one node as before. Endpoints are the unit because a row may be about several
//! channels; a busy endpoint is delivered by one node at a time, different endpoints by
//! different nodes.
//!
//! On PostgreSQL every claim and every claimed insert first takes one transaction-scoped
//! advisory lock, so the check "no other node holds this endpoint" and the claim are atomic
//! across nodes (the rows themselves are picked with `FOR UPDATE SKIP LOCKED`). SQLite has one
//! writer: `BEGIN IMMEDIATE` serializes the same transactions.

use std::collections::HashMap;

use sqlx::Row;

use super::endpoints::{delivery_from_row, DELIVERY_COLUMNS};
use super::{Attempt, Delivery, NewDelivery, Store, StoreError};

/// The advisory lock key every claim and claimed insert takes on PostgreSQL.
const OUTBOX_LOCK: i64 = 0x4865_7261_6c64;

/// A node's lease on outbox rows: who holds them, the time it is, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The node's id.
    pub owner: String,
    /// Now, Unix ms (leases ending before it are over).
    pub now_ms: i64,
    /// The lease's end, Unix ms.
    pub until_ms: i64,
}

impl Store {
    /// Whether other nodes may share this store (PostgreSQL; SQLite has one node), so a lease
    /// that ended may have been taken over.
    pub fn shared_by_nodes(&self) -> bool {
        !self.sqlite
    }

    /// On PostgreSQL, serializes claims and claimed inserts across nodes (until the commit).
    async fn lock_outbox(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ) -> Result<(), StoreError> {
        if !self.sqlite {
            sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                .bind(OUTBOX_LOCK)
                .fetch_all(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Renews `lease.owner`'s live leases to `lease.until_ms`, claims more rows (at most
    /// `limit` held in all; see the module's order rule) and returns every pending row the
    /// owner now holds, oldest first. On SQLite (one node: cluster mode needs PostgreSQL), the
    /// first claim after a start (`first`) takes every pending row whatever its lease, so a
    /// crashed predecessor's rows need not wait for their leases.
    ///
    /// With no pending row at all there is nothing to renew, claim or return: one read of the
    /// status index says so, and the write transaction (and, on PostgreSQL, the cluster-wide
    /// lock) is skipped. An idle node's periodic claim costs that one read.
    pub async fn claim_deliveries(
        &self,
        lease: &Lease,
        limit: i64,
        first: bool,
    ) -> Result<Vec<Delivery>, StoreError> {
        let take_over = first && self.sqlite;
        let pending: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM (SELECT 1 FROM webhook_deliveries \
             WHERE status = 'pending' LIMIT 1) p",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        if pending == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx().await?;
        self.lock_outbox(&mut tx).await?;
        if take_over {
            sqlx::query(
                "UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2 \
                 WHERE status = 'pending'",
            )
            .bind(lease.owner.clone())
            .bind(lease.until_ms)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE webhook_deliveries SET claimed_until = $1 \
                 WHERE claimed_by = $2 AND status = 'pending' AND claimed_until >= $3",
            )
            .bind(lease.until_ms)
            .bind(lease.owner.clone())
            .bind(lease.now_ms)
            .execute(&mut *tx)
            .await?;
        }
        let held: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM webhook_deliveries \
             WHERE claimed_by = $1 AND status = 'pending' AND claimed_until >= $2",
        )
        .bind(lease.owner.clone())
        .bind(lease.now_ms)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        let room = limit.saturating_sub(held);
        if room > 0 {
            // Claimable: pending, unclaimed or its lease over, of an endpoint no other node
            // holds a live lease on; oldest first.
            let lock = if self.sqlite {
                ""
            } else {
                " FOR UPDATE SKIP LOCKED"
            };
            sqlx::query(&format!(
                "UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2 \
                 WHERE id IN (SELECT d.id FROM webhook_deliveries d \
                   WHERE d.status = 'pending' AND (d.claimed_by = '' OR d.claimed_until < $3) \
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries o \
                     WHERE o.webhook_id = d.webhook_id AND o.status = 'pending' \
                     AND o.claimed_by <> '' AND o.claimed_by <> $1 AND o.claimed_until >= $3) \
                   ORDER BY d.id LIMIT $4{lock})"
            ))
            .bind(lease.owner.clone())
            .bind(lease.until_ms)
            .bind(lease.now_ms)
            .bind(room)
            .execute(&mut *tx)
            .await?;
        }
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE claimed_by = $1 AND status = 'pending' AND claimed_until >= $2 ORDER BY id"
        ))
        .bind(lease.owner.clone())
        .bind(lease.now_ms)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Appends deliveries in one transaction, each due at the time given with it, claimed by
    /// `lease.owner` where the order rule allows it (every pending row of its endpoint is the
    /// owner's); the others are written unclaimed, for the endpoint's holder. Says, row by row,
    /// whether it was claimed.
    pub async fn insert_claimed_deliveries(
        &self,
        deliveries: &[(NewDelivery, i64)],
        lease: &Lease,
    ) -> Result<Vec<bool>, StoreError> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx().await?;
        self.lock_outbox(&mut tx).await?;
        let mut mine: HashMap<&str, bool> = HashMap::new();
        let mut claimed = Vec::with_capacity(deliveries.len());
        for (d, due) in deliveries {
            let ours = match mine.get(d.webhook_id.as_str()) {
                Some(ours) => *ours,
                None => {
                    let others: i64 = sqlx::query(
                        "SELECT COUNT(*) AS n FROM webhook_deliveries \
                         WHERE webhook_id = $1 AND status = 'pending' \
                         AND NOT (claimed_by = $2 AND claimed_until >= $3)",
                    )
                    .bind(d.webhook_id.clone())
                    .bind(lease.owner.clone())
                    .bind(lease.now_ms)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                    mine.insert(d.webhook_id.as_str(), others == 0);
                    others == 0
                }
            };
            let (by, until) = if ours {
                (lease.owner.clone(), lease.until_ms)
            } else {
                (String::new(), 0)
            };
            sqlx::query(&format!(
                "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}, claimed_by, claimed_until) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, 0, 0, '', 0, $8, $9)"
            ))
            .bind(d.id)
            .bind(d.webhook_id.clone())
            .bind(d.app_id.clone())
            .bind(d.events.clone())
            .bind(d.channels.join("\n"))
            .bind(d.created_at)
            .bind(*due)
            .bind(by)
            .bind(until)
            .execute(&mut *tx)
            .await?;
            claimed.push(ours);
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records an attempt on row `id`, only while `owner` holds it (a node whose lease ended
    /// and was taken over records nothing); a finished row (delivered, failed) is released.
    /// Returns whether it was recorded.
    pub async fn record_claimed_attempt(
        &self,
        owner: &str,
        id: i64,
        attempt: &Attempt,
    ) -> Result<bool, StoreError> {
        Ok(self.update_attempt(id, attempt, Some(owner)).await? == 1)
    }

    /// Releases every pending row `owner` holds but those in `keep` (graceful shutdown: rows
    /// still in flight are kept a little longer): other nodes may claim them at once. Returns
    /// how many.
    pub async fn release_deliveries(&self, owner: &str, keep: &[i64]) -> Result<u64, StoreError> {
        // Ids are integers the process holds, so the list is written inline.
        let except = if keep.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = keep.iter().map(i64::to_string).collect();
            format!(" AND id NOT IN ({})", list.join(","))
        };
        let done = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET claimed_by = '', claimed_until = 0 \
             WHERE claimed_by = $1 AND status = 'pending'{except}"
        ))
        .bind(owner.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
