//! The Mercure hub's request parsing, pure (no I/O, no clock) so a fuzz target can call it:
//! the publish form ([`parse_publish_form`]) and the subscribe query ([`parse_subscribe_query`]).

use crate::auth::mercure::Draft;
use crate::protocol::mercure::{Selector, SelectorError, SelectorKind, MAX_SELECTORS};

/// The largest publish body accepted, whole (each update's `data` is further bounded by the
/// app's event payload limit).
pub const MAX_FORM_BYTES: usize = 1024 * 1024;
/// The most `topic` fields one update may carry.
pub const MAX_TOPICS: usize = MAX_SELECTORS;
/// The longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 1_024;
/// The longest update `id` a publisher may give, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// The longest update `type`, in bytes.
pub const MAX_TYPE_BYTES: usize = 200;
/// The longest subscribe query string, in bytes.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// The most selector text one subscription may hold, summed over its selectors (decoded), in
/// bytes: each selector's text is kept while its subscriber lives.
pub const MAX_SELECTORS_BYTES: usize = 8 * 1024;

/// The path every Mercure hub keeps for what it generates itself.
pub const RESERVED_PATH: &str = "/.well-known/mercure";

/// A parsed publish request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishForm {
    /// The topics, the canonical one first.
    pub topics: Vec<String>,
    /// The update's data (`None`: no `data` field).
    pub data: Option<String>,
    /// Whether `private` was present (whatever its value).
    pub private: bool,
    /// The publisher's id for the update.
    pub id: Option<String>,
    /// The SSE `event` type.
    pub event_type: Option<String>,
    /// The SSE `retry`, milliseconds.
    pub retry: Option<u64>,
}

/// Why a publish request was refused: each is a 400, but those marked are 413.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The body is larger than [`MAX_FORM_BYTES`] (413).
    #[error("the publish body is larger than {MAX_FORM_BYTES} bytes")]
    TooLarge,
    /// More than [`MAX_TOPICS`] topics (413).
    #[error("an update may name at most {MAX_TOPICS} topics")]
    TooManyTopics,
    /// A field longer than its bound (413).
    #[error("the {0} field is too long")]
    FieldTooLong(&'static str),
    /// No `topic` field.
    #[error("the update names no topic")]
    NoTopic,
    /// A field that breaks the draft's character rules.
    #[error("invalid {0}: {1}")]
    Invalid(&'static str, &'static str),
    /// A topic in the hub's reserved namespace, or `*`.
    #[error("the topic {0:?} is reserved by the hub")]
    ReservedTopic(String),
}

impl FormError {
    /// Whether the draft answers this with 413 rather than 400.
    pub fn too_large(&self) -> bool {
        matches!(
            self,
            FormError::TooLarge | FormError::TooManyTopics | FormError::FieldTooLong(_)
        )
    }
}

/// Whether `c` is a control character (C0, DEL, C1) or a Unicode format character (`Cf`), which
/// the drafts refuse in topics, ids, types and selectors.
pub fn is_forbidden_char(c: char) -> bool {
    let u = c as u32;
    u < 0x20
        || (0x7f..=0x9f).contains(&u)
        || matches!(
            u,
            0xad | 0x600..=0x605
                | 0x61c
                | 0x6dd
                | 0x70f
                | 0x890..=0x891
                | 0x8e2
                | 0x180e
                | 0x200b..=0x200f
                | 0x202a..=0x202e
                | 0x2060..=0x2064
                | 0x2066..=0x206f
                | 0xfeff
                | 0xfff9..=0xfffb
                | 0x110bd
                | 0x110cd
                | 0x13430..=0x1343f
                | 0x1bca0..=0x1bca3
                | 0x1d173..=0x1d17a
                | 0xe0001
                | 0xe0020..=0xe007f
        )
}

fn clean(value: &str) -> bool {
    !value.chars().any(is_forbidden_char)
}

/// Whether `topic` addresses the reserved hub namespace: resolved against a hub URL, its path
/// (dot segments removed, percent-encoding decoded) is `/.well-known/mercure` or below it, under
/// any prefix (an app's hub lives at `/apps/{id}/.well-known/mercure`). A topic that is not a URL
/// reference does not.
pub fn is_reserved_topic(topic: &str) -> bool {
    let Ok(base) = url::Url::parse("http://hub.invalid/apps/0/.well-known/mercure") else {
        return false;
    };
    let Ok(resolved) = base.join(topic) else {
        return false;
    };
    let path = percent_encoding::percent_decode_str(resolved.path()).decode_utf8_lossy();
    // Decoding may have made new dot segments: resolve once more.
    let path = match base.join(&path) {
        Ok(again) => again.path().to_owned(),
        Err(_) => path.into_owned(),
    };
    path.match_indices(RESERVED_PATH).any(|(at, _)| {
        let rest = &path[at + RESERVED_PATH.len()..];
        rest.is_empty() || rest.starts_with('/')
    })
}

/// Parses an `application/x-www-form-urlencoded` publish body (unknown fields are ignored, as
/// the drafts ask).
pub fn parse_publish_form(body: &[u8]) -> Result<PublishForm, FormError> {
    if body.len() > MAX_FORM_BYTES {
        return Err(FormError::TooLarge);
    }
    if std::str::from_utf8(body).is_err() {
        return Err(FormError::Invalid("body", "not UTF-8"));
    }
    let mut form = PublishForm::default();
    for (name, value) in form_urlencoded::parse(body) {
        match &*name {
            "topic" => {
                if form.topics.len() >= MAX_TOPICS {
                    return Err(FormError::TooManyTopics);
                }
                if value.len() > MAX_TOPIC_BYTES {
                    return Err(FormError::FieldTooLong("topic"));
                }
                if value.is_empty() || !clean(&value) {
                    return Err(FormError::Invalid(
                        "topic",
                        "empty or with control or format characters",
                    ));
                }
                if value == "*" || is_reserved_topic(&value) {
                    return Err(FormError::ReservedTopic(value.into_owned()));
                }
                form.topics.push(value.into_owned());
            }
            "data" => form.data = Some(value.into_owned()),
            "private" => form.private = true,
            "id" => {
                if value.len() > MAX_ID_BYTES {
                    return Err(FormError::FieldTooLong("id"));
                }
                if value.is_empty()
                    || value.starts_with('#')
                    || value == "earliest"
                    || !clean(&value)
                {
                    return Err(FormError::Invalid(
                        "id",
                        "empty, starting with #, `earliest`, or with control or format characters",
                    ));
                }
                form.id = Some(value.into_owned());
            }
            "type" => {
                if value.len() > MAX_TYPE_BYTES {
                    return Err(FormError::FieldTooLong("type"));
                }
                if !clean(&value) || value == "mercure" {
                    return Err(FormError::Invalid(
                        "type",
                        "`mercure` or with control or format characters",
                    ));
                }
                form.event_type = Some(value.into_owned()).filter(|t| !t.is_empty());
            }
            "retry" => {
                if value.is_empty()
                    || value.len() > 10
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(FormError::Invalid("retry", "not a number of milliseconds"));
                }
                form.retry = value.parse().ok();
            }
            _ => {}
        }
    }
    if form.topics.is_empty() {
        return Err(FormError::NoTopic);
    }
    Ok(form)
}

/// A parsed subscribe request.
#[derive(Debug, Clone, Default)]
pub struct SubscribeQuery {
    /// Which draft the parameters speak (`match*` or `last_event_id`: draft-08).
    pub draft08: bool,
    /// The selectors, with the raw text and kind each came from.
    pub selectors: Vec<(SelectorKind, String, Selector)>,
    /// The query's last event id (`lastEventID` or `last_event_id`).
    pub last_event_id: Option<String>,
    /// The draft-07 `authorization` query parameter.
    pub authorization: Option<String>,
}

impl SubscribeQuery {
    /// The draft the request speaks.
    pub fn draft(&self) -> Draft {
        if self.draft08 {
            Draft::Draft08
        } else {
            Draft::Draft07
        }
    }
}

/// Why a subscribe query was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Longer than [`MAX_QUERY_BYTES`].
    #[error("the query is longer than {MAX_QUERY_BYTES} bytes")]
    TooLong,
    /// No selector at all.
    #[error("no topic selector (draft-07 `topic`, draft-08 `match`)")]
    NoSelector,
    /// More than [`MAX_SELECTORS`].
    #[error("at most {MAX_SELECTORS} selectors per subscription")]
    TooManySelectors,
    /// Selectors longer than [`MAX_SELECTORS_BYTES`] together.
    #[error(
        "the selectors of one subscription may hold at most {MAX_SELECTORS_BYTES} bytes together"
    )]
    SelectorsTooLong,
    /// A `match...` parameter of no supported matcher type.
    #[error("unsupported matcher parameter {0:?}")]
    UnknownMatcher(String),
    /// A selector with control or format characters.
    #[error("a selector holds control or format characters")]
    BadCharacters,
    /// A selector its kind refuses.
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

/// Parses a subscribe request's query string; relative URL patterns resolve against `hub_url`.
/// The URL patterns of one request share one compile budget.
pub fn parse_subscribe_query(query: &str, hub_url: &str) -> Result<SubscribeQuery, QueryError> {
    crate::protocol::mercure::with_budget(|| parse_query(query, hub_url))
}

fn parse_query(query: &str, hub_url: &str) -> Result<SubscribeQuery, QueryError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong);
    }
    let mut parsed = SubscribeQuery::default();
    let mut query_last_id = None;
    let mut legacy_last_id = None;
    let mut selector_bytes = 0usize;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let kind = match &*name {
            "topic" => Some(SelectorKind::Draft07),
            "match" => Some(SelectorKind::Match),
            "match_exact" => Some(SelectorKind::MatchExact),
            "match_urlpattern" => Some(SelectorKind::MatchUrlPattern),
            other if SelectorKind::is_reserved_param(other) => {
                return Err(QueryError::UnknownMatcher(other.to_owned()));
            }
            "last_event_id" => {
                parsed.draft08 = true;
                query_last_id.get_or_insert_with(|| value.clone().into_owned());
                None
            }
            "lastEventID" => {
                legacy_last_id.get_or_insert_with(|| value.clone().into_owned());
                None
            }
            "authorization" => {
                parsed.authorization = Some(value.clone().into_owned());
                None
            }
            _ => None,
        };
        let Some(kind) = kind else { continue };
        if kind != SelectorKind::Draft07 {
            parsed.draft08 = true;
        }
        // A repeated selector (`topic=a&topic=a`) is one subscription, one document.
        if parsed
            .selectors
            .iter()
            .any(|(k, raw, _)| *k == kind && *raw == *value)
        {
            continue;
        }
        if parsed.selectors.len() >= MAX_SELECTORS {
            return Err(QueryError::TooManySelectors);
        }
        selector_bytes += value.len();
        if selector_bytes > MAX_SELECTORS_BYTES {
            return Err(QueryError::SelectorsTooLong);
        }
        if !clean(&value) {
            return Err(QueryError::BadCharacters);
        }
        let selector = Selector::parse_in(kind, &value, hub_url)?;
        parsed.selectors.push((kind, value.into_owned(), selector));
    }
    if parsed.selectors.is_empty() {
        return Err(QueryError::NoSelector);
    }
    parsed.last_event_id = query_last_id.or(legacy_last_id);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_form_is_parsed_with_plus_as_space_and_the_first_topic_canonical() {
        let form = parse_publish_form(
            b"topic=https%3A%2F%2Fex.com%2Fa&topic=b&data=hello+world%0Aline&private=&id=x1&type=up&retry=3000&other=1",
        )
        .unwrap();
        assert_eq!(form.topics, vec!["https://ex.com/a", "b"]);
        assert_eq!(form.data.as_deref(), Some("hello world\nline"));
        assert!(form.private);
        assert_eq!(form.id.as_deref(), Some("x1"));
        assert_eq!(form.event_type.as_deref(), Some("up"));
        assert_eq!(form.retry, Some(3000));
    }

    #[test]
    fn bad_publish_forms_are_refused() {
        let refused = |body: &str| parse_publish_form(body.as_bytes()).unwrap_err();
        assert_eq!(refused("data=x"), FormError::NoTopic);
        assert!(matches!(refused("topic=*"), FormError::ReservedTopic(_)));
        for reserved in [
            "/.well-known/mercure",
            "https://other.example/.well-known/mercure/subscriptions/a/b",
            "/.well-known/%6Dercure/x",
            "/.well-known/mercure/../mercure/x",
            "/apps/1/.well-known/mercure/subscriptions",
            "/a/%2e%2e/.well-known/mercure",
        ] {
            let body = format!(
                "topic={}",
                percent_encoding::utf8_percent_encode(reserved, percent_encoding::NON_ALPHANUMERIC)
            );
            assert!(
                matches!(refused(&body), FormError::ReservedTopic(_)),
                "{reserved}"
            );
        }
        assert!(parse_publish_form(b"topic=/.well-known/mercurex").is_ok());
        assert!(matches!(
            refused("topic=a&id=%23x"),
            FormError::Invalid("id", _)
        ));
        assert!(matches!(
            refused("topic=a&id=earliest"),
            FormError::Invalid("id", _)
        ));
        assert!(matches!(
            refused("topic=a&id=a%0Ab"),
            FormError::Invalid("id", _)
        ));
        assert!(matches!(
            refused("topic=a&type=mercure"),
            FormError::Invalid("type", _)
        ));
        assert!(matches!(
            refused("topic=a&type=a%0Ddata"),
            FormError::Invalid("type", _)
        ));
        assert!(matches!(
            refused("topic=a%E2%80%8Bb"),
            FormError::Invalid("topic", _)
        ));
        assert!(matches!(
            refused("topic=a&retry=-1"),
            FormError::Invalid("retry", _)
        ));
        let many = "topic=a&".repeat(MAX_TOPICS + 1);
        assert_eq!(refused(&many), FormError::TooManyTopics);
        assert!(refused(&format!("topic=a&id={}", "x".repeat(MAX_ID_BYTES + 1))).too_large());
        assert_eq!(
            parse_publish_form(&vec![b'a'; MAX_FORM_BYTES + 1]).unwrap_err(),
            FormError::TooLarge
        );
        assert!(matches!(
            parse_publish_form(b"topic=\xff").unwrap_err(),
            FormError::Invalid("body", _)
        ));
    }

    const HUB: &str = "https://hub.example/apps/1/.well-known/mercure";

    #[test]
    fn subscribe_queries_tell_the_drafts_apart() {
        let q =
            parse_subscribe_query("topic=a&topic=*&lastEventID=x&authorization=t", HUB).unwrap();
        assert_eq!(q.draft(), Draft::Draft07);
        assert_eq!(q.selectors.len(), 2);
        assert_eq!(q.last_event_id.as_deref(), Some("x"));
        assert_eq!(q.authorization.as_deref(), Some("t"));
        let q = parse_subscribe_query("match=a&match_exact=b&last_event_id=y&lastEventID=z", HUB)
            .unwrap();
        assert_eq!(q.draft(), Draft::Draft08);
        assert_eq!(q.last_event_id.as_deref(), Some("y"));
        assert_eq!(
            parse_subscribe_query("match_regex=a", HUB).unwrap_err(),
            QueryError::UnknownMatcher("match_regex".into())
        );
        assert_eq!(
            parse_subscribe_query("MATCHES=a", HUB).unwrap_err(),
            QueryError::UnknownMatcher("MATCHES".into())
        );
        assert_eq!(
            parse_subscribe_query("x=1", HUB).unwrap_err(),
            QueryError::NoSelector
        );
        let selector = "a".repeat(MAX_SELECTORS_BYTES / 8 - 1);
        let at_bound: String = (0..8).map(|i| format!("topic={selector}{i}&")).collect();
        assert_eq!(
            parse_subscribe_query(&at_bound, HUB)
                .unwrap()
                .selectors
                .len(),
            8
        );
        assert_eq!(
            parse_subscribe_query(&format!("{at_bound}match=b"), HUB).unwrap_err(),
            QueryError::SelectorsTooLong
        );
        let many: String = (0..=MAX_SELECTORS)
            .map(|i| format!("topic=a{i}&"))
            .collect();
        assert_eq!(
            parse_subscribe_query(&many, HUB).unwrap_err(),
            QueryError::TooManySelectors
        );
        // A repeated selector is one (and does not count against the cap again).
        let repeated = "topic=a&".repeat(MAX_SELECTORS + 1);
        let q = parse_subscribe_query(&format!("{repeated}match=a"), HUB).unwrap();
        assert_eq!(q.selectors.len(), 2);
        assert_eq!(
            parse_subscribe_query("topic=a%00", HUB).unwrap_err(),
            QueryError::BadCharacters
        );
    }
}
