//! The audit log page: the tenant's entries (every role may read them; the operator reads every
//! tenant's), newest first, filtered by action, actor and a start date, 50 a page.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{encode, render, when, Chrome, Ctx, Flash, Refusal, Shared};
use crate::port::*;

const PAGE: u32 = 50;

/// The page's query string.
#[derive(Deserialize, Default)]
pub(crate) struct AuditParams {
    action: Option<String>,
    actor: Option<String>,
    /// `YYYY-MM-DD` (UTC).
    since: Option<String>,
    tenant: Option<String>,
    before: Option<i64>,
}

/// An entry as the page shows it.
pub(crate) struct AuditLine {
    row: AuditRow,
    when: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    lines: Vec<AuditLine>,
    action: String,
    actor: String,
    since: String,
    tenant: String,
    older: String,
}

/// Midnight UTC of `YYYY-MM-DD`, Unix milliseconds.
fn day_start(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400_000)
}

pub(super) async fn audit<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Query(params): Query<AuditParams>,
) -> Result<Response, Refusal> {
    let trimmed = |v: &Option<String>| v.as_deref().unwrap_or("").trim().to_owned();
    let (action, actor, since, tenant) = (
        trimmed(&params.action),
        trimmed(&params.actor),
        trimmed(&params.since),
        trimmed(&params.tenant),
    );
    let mut flash = Flash::default();
    let since_ms = if since.is_empty() {
        None
    } else {
        let start = day_start(&since);
        if start.is_none() {
            flash.error = Some(format!("{since:?} is not a date (YYYY-MM-DD)."));
        }
        start
    };
    let rows = dash
        .port
        .audit(
            &ctx.admin,
            AuditQuery {
                tenant_id: Some(tenant.clone()),
                action: Some(action.clone()),
                actor: Some(actor.clone()),
                since_ms,
                before_id: params.before,
                limit: PAGE,
            },
        )
        .await?;
    let older = match rows.last() {
        Some(last) if rows.len() == PAGE as usize => format!(
            "/dashboard/audit?action={}&actor={}&since={}&tenant={}&before={}",
            encode(&action),
            encode(&actor),
            encode(&since),
            encode(&tenant),
            last.id
        ),
        _ => String::new(),
    };
    Ok(render(&AuditPage {
        chrome: Chrome::new(&ctx, flash, "audit"),
        lines: rows
            .into_iter()
            .map(|row| AuditLine {
                when: when(row.at_ms),
                row,
            })
            .collect(),
        action,
        actor,
        since,
        tenant,
        older,
    }))
}

#[cfg(test)]
mod tests {
    use super::day_start;

    #[test]
    fn dates() {
        assert_eq!(day_start("1970-01-01"), Some(0));
        assert_eq!(day_start("2025-11-27"), Some(20_419 * 86_400_000));
        assert_eq!(day_start("2025-13-01"), None);
        assert_eq!(day_start("yesterday"), None);
    }
}
