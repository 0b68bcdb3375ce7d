//! Reading a verified token's claims into [`Grants`]: draft-07's `mercure` claim and draft-08's
//! `authorization_details` (type [`MERCURE_DETAIL_TYPE`]). Any malformed part refuses the whole
//! token (no partial acceptance).

use serde_json::{Map, Value};

use super::{Draft, Grants, TokenError};
use crate::protocol::mercure::{Selector, SelectorKind, MAX_SELECTORS};

/// The draft-08 authorization detail type.
pub const MERCURE_DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
/// The most Mercure authorization details one token may carry.
pub const MAX_DETAILS: usize = 16;

fn malformed(why: impl Into<String>) -> TokenError {
    TokenError::Malformed(why.into())
}

/// A NumericDate claim (`exp`, `nbf`) as whole seconds; a non-number refuses the token.
pub(super) fn time_claim(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            // Fractional seconds are allowed by RFC 7519; they round down.
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| malformed(format!("{name} is not a NumericDate"))),
        Some(_) => Err(malformed(format!("{name} is not a NumericDate"))),
    }
}

/// Whether `aud` (a string or an array of strings) names `audience`.
pub(super) fn audience_names(claims: &Map<String, Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

fn subject(claims: &Map<String, Value>) -> Option<String> {
    claims.get("sub").and_then(Value::as_str).map(str::to_owned)
}

/// draft-07: `mercure.subscribe` / `mercure.publish` (arrays of selectors), `mercure.payload`.
/// A token without the claim is valid and grants nothing.
pub(super) fn draft07_grants(
    claims: &Map<String, Value>,
    hub_url: &str,
) -> Result<Grants, TokenError> {
    let mut grants = Grants {
        draft: Some(Draft::Draft07),
        subject: subject(claims),
        ..Grants::default()
    };
    let mercure = match claims.get("mercure") {
        None | Some(Value::Null) => return Ok(grants),
        Some(Value::Object(mercure)) => mercure,
        Some(_) => return Err(malformed("the mercure claim is not an object")),
    };
    grants.subscribe = draft07_list(mercure, "subscribe", hub_url)?;
    grants.publish = draft07_list(mercure, "publish", hub_url)?;
    grants.payload = mercure.get("payload").filter(|p| !p.is_null()).cloned();
    Ok(grants)
}

fn draft07_list(
    mercure: &Map<String, Value>,
    right: &str,
    hub_url: &str,
) -> Result<Vec<Selector>, TokenError> {
    let items = match mercure.get(right) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(malformed(format!("mercure.{right} is not an array"))),
    };
    if items.len() > MAX_SELECTORS {
        return Err(malformed(format!(
            "mercure.{right} has more than {MAX_SELECTORS} selectors"
        )));
    }
    items
        .iter()
        .map(|item| {
            let raw = item
                .as_str()
                .ok_or_else(|| malformed(format!("mercure.{right} holds a non-string")))?;
            Selector::parse_in(SelectorKind::Draft07, raw, hub_url)
                .map_err(|e| malformed(format!("mercure.{right}: {e}")))
        })
        .collect()
}

/// draft-08: every Mercure authorization detail's `actions` and `topics`. Details of other types
/// are left alone; unknown actions grant nothing; an unknown `match_type` refuses the token.
pub(super) fn draft08_grants(
    claims: &Map<String, Value>,
    hub_url: &str,
) -> Result<Grants, TokenError> {
    let mut grants = Grants {
        draft: Some(Draft::Draft08),
        subject: subject(claims),
        ..Grants::default()
    };
    let details = match claims.get("authorization_details") {
        None => return Ok(grants),
        Some(Value::Array(details)) => details,
        Some(_) => return Err(malformed("authorization_details is not an array")),
    };
    let mut mercure_details = 0usize;
    let mut total_topics = 0usize;
    for detail in details {
        let Value::Object(detail) = detail else {
            return Err(malformed("an authorization detail is not an object"));
        };
        if detail.get("type").and_then(Value::as_str) != Some(MERCURE_DETAIL_TYPE) {
            if !detail.get("type").is_some_and(Value::is_string) {
                return Err(malformed("an authorization detail has no type"));
            }
            continue;
        }
        mercure_details += 1;
        if mercure_details > MAX_DETAILS {
            return Err(malformed(format!(
                "more than {MAX_DETAILS} Mercure authorization details"
            )));
        }
        let (subscribe, publish) = actions(detail)?;
        // Bound the compiling over all details before any of it.
        total_topics += detail
            .get("topics")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if total_topics > 2 * MAX_SELECTORS {
            return Err(malformed(format!(
                "more than {} topics over all authorization details",
                2 * MAX_SELECTORS
            )));
        }
        let topics = topics(detail, hub_url)?;
        let payload = match detail.get("payload") {
            None | Some(Value::Null) => None,
            Some(payload @ Value::Object(_)) => Some(payload.clone()),
            Some(_) => return Err(malformed("a payload is not an object")),
        };
        if subscribe {
            add(&mut grants.subscribe, &topics, "subscribe")?;
            grants.subscribe_payloads.push((topics.clone(), payload));
        }
        if publish {
            add(&mut grants.publish, &topics, "publish")?;
        }
    }
    Ok(grants)
}

/// `actions`: a non-empty array of strings; answers (subscribe, publish).
fn actions(detail: &Map<String, Value>) -> Result<(bool, bool), TokenError> {
    let Some(Value::Array(actions)) = detail.get("actions") else {
        return Err(malformed("an authorization detail has no actions array"));
    };
    if actions.is_empty() {
        return Err(malformed("an authorization detail has no actions"));
    }
    let mut rights = (false, false);
    for action in actions {
        match action.as_str() {
            Some("subscribe") => rights.0 = true,
            Some("publish") => rights.1 = true,
            Some(_) => {}
            None => return Err(malformed("an action is not a string")),
        }
    }
    Ok(rights)
}

/// `topics`: a non-empty array of `{"match": ..., "match_type"?: "exact" | "urlpattern"}`.
fn topics(detail: &Map<String, Value>, hub_url: &str) -> Result<Vec<Selector>, TokenError> {
    let Some(Value::Array(topics)) = detail.get("topics") else {
        return Err(malformed("an authorization detail has no topics array"));
    };
    if topics.is_empty() {
        return Err(malformed("an authorization detail has no topics"));
    }
    if topics.len() > MAX_SELECTORS {
        return Err(malformed(format!(
            "an authorization detail has more than {MAX_SELECTORS} topics"
        )));
    }
    topics
        .iter()
        .map(|topic| {
            let Value::Object(topic) = topic else {
                return Err(malformed("a topic matcher is not an object"));
            };
            let raw = topic
                .get("match")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("a topic matcher has no match string"))?;
            let kind = match topic.get("match_type") {
                None => SelectorKind::MatchExact,
                Some(Value::String(t)) if t == "exact" => SelectorKind::MatchExact,
                Some(Value::String(t)) if t == "urlpattern" => SelectorKind::MatchUrlPattern,
                Some(_) => return Err(malformed("unsupported match_type")),
            };
            Selector::parse_in(kind, raw, hub_url).map_err(|e| malformed(e.to_string()))
        })
        .collect()
}

/// Adds `topics` to a right, bounded by [`MAX_SELECTORS`] over all of its details.
fn add(right: &mut Vec<Selector>, topics: &[Selector], name: &str) -> Result<(), TokenError> {
    if right.len() + topics.len() > MAX_SELECTORS {
        return Err(malformed(format!(
            "more than {MAX_SELECTORS} {name} topics"
        )));
    }
    right.extend(topics.iter().cloned());
    Ok(())
}
