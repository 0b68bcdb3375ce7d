//! An app's usage page: charts and tables of messages and peak connections.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::{
    clock_label, gauge, grouped, nav, render, when, AppNav, Chrome, Ctx, Flash, Gauge, Refusal,
    Shared,
};
use crate::charts;
use crate::port::*;

pub(crate) struct UsageDay {
    date: String,
    messages: String,
    peak: String,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    chrome: Chrome,
    nav: AppNav,
    today: Gauge,
    connections: String,
    days_messages_svg: String,
    days_peak_svg: String,
    minutes_messages_svg: String,
    minutes_peak_svg: String,
    days: Vec<UsageDay>,
    hours: Vec<UsageDay>,
}

pub(super) async fn usage<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, &id).await?;
    let usage = dash.port.usage(&ctx.admin, &id).await?;
    let labels: Vec<String> = usage.days.iter().map(|d| d.date.clone()).collect();
    let day_messages: Vec<u64> = usage.days.iter().map(|d| d.messages).collect();
    let day_peaks: Vec<u64> = usage.days.iter().map(|d| d.peak_connections).collect();
    let first = usage
        .minutes
        .first()
        .map_or(String::new(), |m| clock_label(m.minute_start));
    let last = usage
        .minutes
        .last()
        .map_or(String::new(), |m| clock_label(m.minute_start));
    let minute_messages: Vec<u64> = usage.minutes.iter().map(|m| m.messages).collect();
    let minute_peaks: Vec<u64> = usage.minutes.iter().map(|m| m.peak_connections).collect();
    // The table sums the minutes per hour (1,440 rows would help nobody).
    let mut hours = Vec::new();
    for chunk in usage.minutes.chunks(60) {
        let messages: u64 = chunk.iter().map(|m| m.messages).sum();
        let peak = chunk.iter().map(|m| m.peak_connections).max().unwrap_or(0);
        hours.push(UsageDay {
            date: chunk
                .first()
                .map_or(String::new(), |m| when(m.minute_start * 1000)),
            messages: grouped(messages),
            peak: grouped(peak),
        });
    }
    Ok(render(&UsagePage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        nav: nav(&app, "usage"),
        today: gauge(usage.messages_today, usage.max_daily_messages),
        connections: grouped(usage.connections),
        days_messages_svg: charts::bars("Messages per day, last 30 days", &labels, &day_messages),
        days_peak_svg: charts::bars(
            "Peak connections per day, last 30 days",
            &labels,
            &day_peaks,
        ),
        minutes_messages_svg: charts::line(
            "Messages per minute, last 24 hours",
            &first,
            &last,
            &minute_messages,
        ),
        minutes_peak_svg: charts::line(
            "Peak connections per minute, last 24 hours",
            &first,
            &last,
            &minute_peaks,
        ),
        days: usage
            .days
            .iter()
            .rev()
            .map(|d| UsageDay {
                date: d.date.clone(),
                messages: grouped(d.messages),
                peak: grouped(d.peak_connections),
            })
            .collect(),
        hours: hours.into_iter().rev().collect(),
    }))
}
