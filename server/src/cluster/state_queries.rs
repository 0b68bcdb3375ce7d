//! REST channel queries answered from the cluster-wide state in Redis ([`super::state`]):
//! `GET /channels`, `/channels/{name}`, `/channels/{name}/users` and trigger `info`, read from
//! the totals without asking the other nodes; `Err(StateUnavailable)` (warned, rate-limited)
//! when Redis does not answer in time, so the caller answers from this node's state.

use std::collections::HashMap;

use tokio::time::Instant;

use super::state::{prefix, StateUnavailable, WARN_INTERVAL};
use super::Cluster;
use crate::locks::MutexExt;

impl Cluster {
    /// The app's occupied channels cluster-wide whose name starts with `prefix` (internal `#`
    /// channels left out), with their subscriptions and (presence) user counts.
    pub async fn channels(
        &self,
        app_id: &str,
        prefix_filter: &str,
    ) -> Result<Vec<(String, usize, usize)>, StateUnavailable> {
        let p = prefix(&self.inner.settings.name);
        let mut conn = self.inner.manager.get();
        let read = async {
            let all: HashMap<String, i64> = redis::cmd("HGETALL")
                .arg(format!("{p}occ:{app_id}"))
                .query_async(&mut conn)
                .await?;
            let mut list: Vec<(String, usize, usize)> = all
                .into_iter()
                .filter(|(name, count)| {
                    *count > 0 && name.starts_with(prefix_filter) && !name.starts_with('#')
                })
                .map(|(name, count)| (name, usize::try_from(count).unwrap_or(0), 0))
                .collect();
            list.sort();
            let presence: Vec<usize> = (0..list.len())
                .filter(|&i| list[i].0.starts_with("presence-"))
                .collect();
            if !presence.is_empty() {
                let mut pipe = redis::pipe();
                for &i in &presence {
                    pipe.cmd("HLEN")
                        .arg(format!("{p}pm:{app_id}:{}", list[i].0));
                }
                let counts: Vec<usize> = pipe.query_async(&mut conn).await?;
                for (&i, users) in presence.iter().zip(counts) {
                    list[i].2 = users;
                }
            }
            Ok::<_, redis::RedisError>(list)
        };
        self.answered(tokio::time::timeout(super::slots::ADMIT_TIMEOUT, read).await)
    }

    /// One channel's subscriptions and (presence) user count, cluster-wide.
    pub async fn channel_counts(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<(usize, usize), StateUnavailable> {
        let p = prefix(&self.inner.settings.name);
        let mut conn = self.inner.manager.get();
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(format!("{p}occ:{app_id}"))
            .arg(channel)
            .cmd("HLEN")
            .arg(format!("{p}pm:{app_id}:{channel}"));
        let read = pipe.query_async::<(Option<i64>, usize)>(&mut conn);
        let (subscriptions, users) =
            self.answered(tokio::time::timeout(super::slots::ADMIT_TIMEOUT, read).await)?;
        Ok((
            usize::try_from(subscriptions.unwrap_or(0)).unwrap_or(0),
            users,
        ))
    }

    /// A presence channel's user ids cluster-wide, sorted.
    pub async fn presence_users(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<Vec<String>, StateUnavailable> {
        let p = prefix(&self.inner.settings.name);
        let mut conn = self.inner.manager.get();
        let mut command = redis::cmd("HKEYS");
        command.arg(format!("{p}pm:{app_id}:{channel}"));
        let read = command.query_async::<Vec<String>>(&mut conn);
        let mut users =
            self.answered(tokio::time::timeout(super::slots::ADMIT_TIMEOUT, read).await)?;
        users.sort();
        Ok(users)
    }

    /// A read's outcome; a failure is logged at warn (at most once per [`WARN_INTERVAL`]): the
    /// caller answers from this node's state.
    fn answered<T>(
        &self,
        outcome: Result<Result<T, redis::RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, StateUnavailable> {
        let why = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        let mut warned = self.inner.state.warned.lock_or_recover();
        let now = Instant::now();
        if warned.is_none_or(|at| now >= at + WARN_INTERVAL) {
            *warned = Some(now);
            tracing::warn!(
                why,
                "the cluster state in Redis did not answer: REST channel queries answer from this node's state"
            );
        }
        Err(StateUnavailable)
    }
}
