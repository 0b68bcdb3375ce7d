//! Mercure topic selectors: which topics a subscription (or a token's right) covers.
//!
//! SKELETON (issue 16): the API both Mercure helpers build against. `Exact` and `Any` work;
//! URI templates (RFC 6570) and URL patterns are refused until the selector work lands.
//!
//! Pure: no I/O, no clock.

/// The most selectors one subscription (or one token right) may name.
pub const MAX_SELECTORS: usize = 32;
/// The longest selector accepted, in bytes.
pub const MAX_SELECTOR_BYTES: usize = 1_024;

/// Where a selector came from, which decides how it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorKind {
    /// draft-07 `topic=` (and draft-07 token selectors): `*`, an exact topic, or an RFC 6570
    /// URI template.
    Draft07,
    /// draft-08 `match=`.
    Match,
    /// draft-08 `match_exact=`.
    MatchExact,
    /// draft-08 `match_urlpattern=`.
    MatchUrlPattern,
}

/// Why a selector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Longer than [`MAX_SELECTOR_BYTES`].
    #[error("selector longer than {MAX_SELECTOR_BYTES} bytes")]
    TooLong,
    /// Not a valid selector of its kind (the text says why).
    #[error("invalid selector: {0}")]
    Invalid(String),
    /// Valid but over the complexity bound (too many template expressions or pattern parts).
    #[error("selector too complex: {0}")]
    TooComplex(String),
}

/// One parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `*`: every topic.
    Any,
    /// Exactly this topic.
    Exact(String),
}

impl Selector {
    /// Parses `raw` as a selector of `kind`.
    pub fn parse(kind: SelectorKind, raw: &str) -> Result<Selector, SelectorError> {
        if raw.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError::TooLong);
        }
        match kind {
            SelectorKind::Draft07 | SelectorKind::Match if raw == "*" => Ok(Selector::Any),
            SelectorKind::MatchExact => Ok(Selector::Exact(raw.to_owned())),
            _ if raw.contains('{') || kind == SelectorKind::MatchUrlPattern => Err(
                SelectorError::Invalid("templates and URL patterns are not supported yet".into()),
            ),
            _ => Ok(Selector::Exact(raw.to_owned())),
        }
    }

    /// Whether this selector covers `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Any => true,
            Selector::Exact(exact) => exact == topic,
        }
    }
}

/// Whether any of `selectors` covers any of `topics` (an update matches a subscription when one
/// of its topics, canonical or alternate, is selected).
pub fn any_matches(selectors: &[Selector], topics: &[String]) -> bool {
    topics
        .iter()
        .any(|topic| selectors.iter().any(|selector| selector.matches(topic)))
}
