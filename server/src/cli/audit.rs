//! `herald audit --tenant ID [--since TIME] [--action A] [--actor EMAIL] [--limit N] [--json]`:
//! a tenant's audit log, newest first; with `--json`, one JSON object per line (JSON lines).
//! The CLI's changes write their entries (actor `cli`) in their own transactions (the commands
//! run inside `AuditBy::cli().scope`); [`record`] is for a command that changes nothing but is
//! audited (printing an app's secret).

use clap::Args;
use serde_json::Value;

use super::{Context, Outcome};
use crate::tenants::{AuditFilter, NewAuditEntry, Store, StoreError, CLI_ACTOR};

/// `herald audit`.
#[derive(Debug, Args)]
pub struct AuditCommand {
    /// The tenant whose entries to print.
    #[arg(long)]
    pub tenant: String,
    /// Only entries at or after this time: Unix seconds, `YYYY-MM-DD` or
    /// `YYYY-MM-DDTHH:MM:SSZ` (UTC).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only this action (`app.created`), or a family of them (`app.`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this actor (an email, or `cli`).
    #[arg(long)]
    pub actor: Option<String>,
    /// At most this many entries (default and most: 500).
    #[arg(long, default_value_t = 500)]
    pub limit: u32,
    /// Print JSON lines: one object per entry.
    #[arg(long)]
    pub json: bool,
}

/// A time argument as Unix milliseconds.
pub(super) fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds.saturating_mul(1000));
    }
    let bad = || format!("{text:?} is not Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time.strip_suffix('Z').ok_or_else(bad)?)),
        None => (text, None),
    };
    let parts: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [y, m, d] = parts[..] else {
        return Err(bad());
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return Err(bad());
    }
    let seconds_of_day = match time {
        None => 0,
        Some(time) => {
            let hms: Vec<i64> = time
                .split(':')
                .map(|p| p.parse().map_err(|_| bad()))
                .collect::<Result<_, _>>()?;
            let [h, mi, s] = hms[..] else {
                return Err(bad());
            };
            if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&s) {
                return Err(bad());
            }
            h * 3600 + mi * 60 + s
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + seconds_of_day) * 1000)
}

/// Runs `herald audit`.
pub(super) async fn run(cx: Context, command: AuditCommand) -> Outcome {
    cx.store.get_tenant(&command.tenant).await?;
    let entries = cx
        .store
        .audit_entries(&AuditFilter {
            tenant_id: Some(command.tenant),
            action: command.action,
            actor: command.actor,
            since_ms: command.since,
            before_id: None,
            limit: command.limit,
        })
        .await?;
    let lines: Vec<String> = if command.json {
        entries
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?
    } else {
        entries
            .iter()
            .map(|e| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    e.at / 1000,
                    e.actor,
                    e.action,
                    e.target,
                    if e.address.is_empty() {
                        "-"
                    } else {
                        &e.address
                    },
                    e.details
                )
            })
            .collect()
    };
    Ok(lines.join("\n"))
}

/// Records an audited event of the CLI that changed nothing (actor `cli`); a failure to write
/// the entry fails the command.
pub(super) async fn record(
    store: &Store,
    tenant: Option<&str>,
    action: &str,
    target: &str,
    details: Value,
) -> Result<(), StoreError> {
    store
        .record_audit(NewAuditEntry {
            tenant_id: tenant.map(str::to_owned),
            actor_id: None,
            actor: CLI_ACTOR.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            details,
            address: String::new(),
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("the audit entry failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_time("2025-11-27"), Ok(20_419 * 86_400_000));
        assert_eq!(
            parse_time("2025-11-27T01:02:03Z"),
            Ok((20_419 * 86_400 + 3723) * 1000)
        );
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-11-27T01:02:03",
            "2025-11",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
