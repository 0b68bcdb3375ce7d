//! An app's live console: the page and its Server-Sent Events stream.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

use super::{grouped, nav, render, AppNav, Chrome, Ctx, Flash, Refusal, Shared};
use crate::port::*;

#[derive(Template)]
#[template(path = "live.html")]
struct LivePage {
    chrome: Chrome,
    nav: AppNav,
    channels: Vec<ChannelRow>,
    connections: String,
}

pub(super) async fn live<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, Refusal> {
    let app = dash.port.app(&ctx.admin, &id).await?;
    let channels = dash.port.channels(&ctx.admin, &id).await?;
    Ok(render(&LivePage {
        chrome: Chrome::new(&ctx, flash, "apps"),
        nav: nav(&app, "live"),
        connections: grouped(app.connections),
        channels,
    }))
}

pub(super) async fn live_events<P: AdminPort>(
    State(dash): State<Shared<P>>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Refusal> {
    let receiver = dash.port.tap(&ctx.admin, &id).await?;
    let port = dash.port.clone();
    let admin = ctx.admin.clone();
    let dash = dash.clone();
    let stream = BroadcastStream::new(receiver).filter_map(move |item| {
        // Each line's node as this admin may see it.
        let item = item.map(|mut event| {
            if let Some(node) = event.node.take() {
                event.node = Some(port.node_label(&admin, &node));
            }
            event
        });
        async move {
            match item {
                Ok(event) => serde_json::to_string(&event)
                    .ok()
                    .map(|json| Ok(Event::default().event("debug").data(json))),
                // The console fell behind: say so rather than stall the app.
                Err(_) => Some(Ok(Event::default().event("lagged").data(
                    "{\"detail\":\"some events were skipped: the console fell behind\"}",
                ))),
            }
        }
    });
    // The stream lasts only as long as the session that opened it (and its access to the app):
    // re-checked every few seconds, it ends once the member is signed out, removed, demoted
    // out of the app, or their password changed.
    let ended = session_ended(dash, ctx.token.clone(), id);
    let stream = stream.take_until(Box::pin(ended));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// How often an open console stream re-checks its session.
pub(crate) const SESSION_RECHECK: Duration = Duration::from_secs(3);

/// Resolves once the session of `token` no longer stands (gone, a new credential generation)
/// or no longer reaches app `id`. A store that cannot be reached ends the stream too.
async fn session_ended<P: AdminPort>(dash: Shared<P>, token: String, id: String) {
    let mut every = tokio::time::interval(SESSION_RECHECK);
    every.tick().await;
    loop {
        every.tick().await;
        let Ok(Some(session)) = dash.port.session(&token).await else {
            return;
        };
        let admin = match dash.port.admin(&session.user_id).await {
            Ok(Some(admin)) if admin.generation == session.generation => admin,
            _ => return,
        };
        if dash.port.app(&admin, &id).await.is_err() {
            return;
        }
    }
}
