//! Active subscriptions: the documents that describe a subscription, the topics of their events,
//! and the web API that lists them (draft-07 and draft-08 shapes).
//!
//! Subscription events are generated only while some subscription of the app can select the
//! subscriptions namespace (an exact topic under it, or a template or pattern matching a topic
//! of its shape; `*` alone does not count), at most `SUBSCRIPTION_EVENTS_PER_SECOND` per app, and
//! are never kept in the history (they are ephemeral: an app's real updates stay replayable).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::protocol::mercure::{Selector, SelectorKind};

/// Everything but RFC 3986's unreserved characters is encoded, once.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// The subscriptions namespace of the hub at `hub_path`.
pub(super) fn namespace(hub_path: &str) -> String {
    format!("{hub_path}/subscriptions")
}

/// One selector of a subscriber, as its documents describe it.
#[derive(Debug, Clone)]
pub(super) struct Described {
    pub(super) kind: SelectorKind,
    /// The selector's text, shared with the parsed selector ([`Selector::shared_text`]).
    pub(super) raw: std::sync::Arc<str>,
    /// The token's payload for it.
    pub(super) payload: Option<Value>,
}

/// Who subscribed, for its documents.
#[derive(Debug, Clone)]
pub(super) struct Subscriber {
    /// `urn:uuid:` made per connection.
    pub(super) id: String,
    /// Its selectors as given.
    pub(super) selectors: Vec<Described>,
}

fn match_type(kind: SelectorKind) -> &'static str {
    match kind {
        SelectorKind::MatchUrlPattern => "urlpattern",
        _ => "exact",
    }
}

/// The topic (and document id) of `subscriber`'s subscription for `selector`.
pub(super) fn topic(hub_path: &str, subscriber: &str, selector: &Described) -> String {
    match selector.kind {
        SelectorKind::Draft07 => format!(
            "{}/{}/{}",
            namespace(hub_path),
            encode(&selector.raw),
            encode(subscriber)
        ),
        kind => format!(
            "{}/{}/{}/{}",
            namespace(hub_path),
            match_type(kind),
            encode(&selector.raw),
            encode(subscriber)
        ),
    }
}

/// The document describing `subscriber`'s subscription for `selector`.
pub(super) fn document(
    hub_path: &str,
    subscriber: &Subscriber,
    selector: &Described,
    active: bool,
) -> Value {
    let id = topic(hub_path, &subscriber.id, selector);
    let mut doc = match selector.kind {
        SelectorKind::Draft07 => json!({
            "@context": "https://mercure.rocks/",
            "id": id,
            "type": "Subscription",
            "topic": &*selector.raw,
            "subscriber": subscriber.id,
            "active": active,
        }),
        kind => json!({
            "id": id,
            "type": "subscription",
            "match_type": match_type(kind),
            "match": &*selector.raw,
            "subscriber": subscriber.id,
            "active": active,
        }),
    };
    if let (Some(payload), Some(map)) = (&selector.payload, doc.as_object_mut()) {
        map.insert("payload".into(), payload.clone());
    }
    doc
}

/// Whether `selector` names the subscriptions namespace of the hub at `hub_path` (a template
/// or pattern might: only `*` alone does not count).
pub(super) fn watches(hub_path: &str, selector: &Selector) -> bool {
    let namespace = namespace(hub_path);
    match selector {
        Selector::Any => false,
        Selector::Exact(topic) => topic.starts_with(&namespace),
        // A template or pattern watches when it matches a topic of the namespace's shapes
        // (draft-07 `{ns}/{selector}/{subscriber}`, draft-08 `{ns}/{type}/{selector}/
        // {subscriber}`): `https://ex.com/books/{id}` does not.
        other => [
            format!("{namespace}/a/b"),
            format!("{namespace}/exact/a/b"),
            format!("{namespace}/urlpattern/a/b"),
        ]
        .iter()
        .any(|probe| other.matches(probe)),
    }
}

/// The most subscription documents one answer of the subscriptions API lists (past it, the
/// collection holds the first ones found).
pub(super) const MAX_DOCUMENTS: usize = 1_000;

/// The API's answer for `path` (under the namespace), from every active subscription's
/// documents: the one whose id is `path`, else the collection of those under it.
pub(super) fn answer(path: &str, docs: Vec<Value>, draft07: bool, last_event_id: &str) -> Value {
    if let Some(single) = docs.iter().find(|d| d["id"] == path) {
        return single.clone();
    }
    let prefix = format!("{}/", path.trim_end_matches('/'));
    let subscriptions: Vec<Value> = docs
        .into_iter()
        .filter(|d| d["id"].as_str().is_some_and(|id| id.starts_with(&prefix)))
        .collect();
    if draft07 {
        json!({
            "@context": "https://mercure.rocks/",
            "id": path,
            "type": "Subscriptions",
            "subscriptions": subscriptions,
            "lastEventID": last_event_id,
        })
    } else {
        json!({
            "id": path,
            "type": "subscriptions",
            "subscriptions": subscriptions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_encode_each_variable_once_in_each_draft_shape() {
        let subscriber = Subscriber {
            id: "urn:uuid:1".into(),
            selectors: Vec::new(),
        };
        let d07 = Described {
            kind: SelectorKind::Draft07,
            raw: "https://ex.com/{id}".into(),
            payload: Some(json!({"u": 1})),
        };
        assert_eq!(
            topic("/h", "urn:uuid:1", &d07),
            "/h/subscriptions/https%3A%2F%2Fex.com%2F%7Bid%7D/urn%3Auuid%3A1"
        );
        let doc = document("/h", &subscriber, &d07, true);
        assert_eq!(doc["type"], "Subscription");
        assert_eq!(doc["payload"], json!({"u": 1}));
        let d08 = Described {
            kind: SelectorKind::MatchUrlPattern,
            raw: "https://ex.com/:id%".into(),
            payload: None,
        };
        assert_eq!(
            topic("/h", "urn:uuid:1", &d08),
            "/h/subscriptions/urlpattern/https%3A%2F%2Fex.com%2F%3Aid%25/urn%3Auuid%3A1"
        );
        let doc = document("/h", &subscriber, &d08, false);
        assert_eq!(doc["match_type"], "urlpattern");
        assert_eq!(doc["active"], false);
    }
}
