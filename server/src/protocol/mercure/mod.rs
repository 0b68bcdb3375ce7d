//! Mercure topic selectors: which topics a subscription (or a token's right) covers.
//!
//! - draft-07 (`topic=` and the `mercure` claim's lists): `*`, an exact string, or an RFC 6570 URI
//!   template (`template.rs`); a string that is not a valid template is matched by equality only,
//!   as the reference hub does.
//! - draft-08 `match` / `match_exact` (byte-for-byte equality) and `match_urlpattern` (WHATWG URL
//!   Pattern, `pattern.rs`). `*` is the wildcard whatever the kind. Values with control or format
//!   characters are refused.
//!
//! Bounded: [`MAX_SELECTOR_BYTES`] per selector, [`MAX_SELECTORS`] per subscription or token
//! right ([`parse_list`]), [`MAX_TEMPLATE_EXPRESSIONS`] expressions per template,
//! [`MAX_PATTERN_GROUPS`] groups per URL pattern, every compiled program under a size limit and
//! the URL patterns of one list under a shared compile budget ([`COMPILE_BUDGET`]);
//! matching runs on the regex crate (linear time, no backtracking).
//!
//! Pure: no I/O, no clock.

mod pattern;
mod template;

use std::sync::Arc;

use regex::Regex;

pub use pattern::{
    take_compiled_bytes, with_budget, COMPILE_BUDGET, DEFAULT_HUB_URL, MAX_PATTERN_GROUPS,
    PATTERN_REGEX_SIZE_LIMIT,
};
pub use template::{MAX_TEMPLATE_EXPRESSIONS, MAX_TEMPLATE_VARIABLES};

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

impl SelectorKind {
    /// The draft-08 subscribe parameter `name` names (`match`, `match_exact`,
    /// `match_urlpattern`); `None` for any other name.
    pub fn from_param(name: &str) -> Option<SelectorKind> {
        match name {
            "match" => Some(SelectorKind::Match),
            "match_exact" => Some(SelectorKind::MatchExact),
            "match_urlpattern" => Some(SelectorKind::MatchUrlPattern),
            _ => None,
        }
    }

    /// Whether `name` is in draft-08's reserved `match` namespace (any name starting with
    /// `match`, ASCII case-insensitively): such a parameter that [`Self::from_param`] does not
    /// know must be refused with 400.
    pub fn is_reserved_param(name: &str) -> bool {
        name.len() >= 5 && name.as_bytes()[..5].eq_ignore_ascii_case(b"match")
    }
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
    /// Exactly this topic (shared: a subscription's index and its documents hold the same
    /// text, [`Selector::shared_text`]).
    Exact(Arc<str>),
    /// A draft-07 RFC 6570 URI template (which also matches its own text exactly).
    Template(Template),
    /// A draft-08 URL pattern.
    UrlPattern(UrlPatternSelector),
}

/// A compiled draft-07 URI template selector.
#[derive(Debug, Clone)]
pub struct Template {
    raw: Arc<str>,
    regex: Regex,
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl Eq for Template {}

/// A compiled draft-08 URL pattern selector.
#[derive(Debug, Clone)]
pub struct UrlPatternSelector {
    raw: Arc<str>,
    base: Arc<str>,
    pattern: Arc<pattern::Pattern>,
}

impl PartialEq for UrlPatternSelector {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw && self.base == other.base
    }
}
impl Eq for UrlPatternSelector {}

impl Selector {
    /// Parses `raw` as a selector of `kind`; relative URL patterns and topics resolve against
    /// [`DEFAULT_HUB_URL`] (use [`Selector::parse_in`] to name the hub's URL).
    pub fn parse(kind: SelectorKind, raw: &str) -> Result<Selector, SelectorError> {
        Selector::parse_in(kind, raw, DEFAULT_HUB_URL)
    }

    /// Parses `raw` as a selector of `kind`, resolving relative URL patterns (and, when
    /// matching, relative topics) against `hub_url`, the hub's absolute URL.
    pub fn parse_in(
        kind: SelectorKind,
        raw: &str,
        hub_url: &str,
    ) -> Result<Selector, SelectorError> {
        if raw.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError::TooLong);
        }
        if kind != SelectorKind::Draft07 {
            check_draft08_value(raw)?;
        }
        if raw == "*" {
            return Ok(Selector::Any);
        }
        match kind {
            SelectorKind::Match | SelectorKind::MatchExact => Ok(Selector::Exact(raw.into())),
            SelectorKind::Draft07 => Ok(match template::compile(raw)? {
                Some(regex) => Selector::Template(Template {
                    raw: raw.into(),
                    regex,
                }),
                None => Selector::Exact(raw.into()),
            }),
            SelectorKind::MatchUrlPattern => {
                let compiled = pattern::Pattern::compile(raw, hub_url)?;
                Ok(Selector::UrlPattern(UrlPatternSelector {
                    raw: raw.into(),
                    base: hub_url.into(),
                    pattern: Arc::new(compiled),
                }))
            }
        }
    }

    /// Whether this selector covers `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::Any => true,
            Selector::Exact(exact) => &**exact == topic,
            Selector::Template(t) => &*t.raw == topic || t.regex.is_match(topic),
            Selector::UrlPattern(p) => p.pattern.matches(topic),
        }
    }

    /// The selector's text as given (`*` for [`Selector::Any`]).
    pub fn as_str(&self) -> &str {
        match self {
            Selector::Any => "*",
            Selector::Exact(exact) => exact,
            Selector::Template(t) => &t.raw,
            Selector::UrlPattern(p) => &p.raw,
        }
    }

    /// The selector's text as given, shared with the selector (no copy; `*` for
    /// [`Selector::Any`]).
    pub fn shared_text(&self) -> Arc<str> {
        static ANY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("*"));
        match self {
            Selector::Any => ANY.clone(),
            Selector::Exact(exact) => exact.clone(),
            Selector::Template(t) => t.raw.clone(),
            Selector::UrlPattern(p) => p.raw.clone(),
        }
    }
}

/// Parses every value of one kind, refusing more than [`MAX_SELECTORS`] of them; their URL
/// patterns share one compile budget ([`with_budget`]).
pub fn parse_list<'a>(
    kind: SelectorKind,
    raws: impl IntoIterator<Item = &'a str>,
    hub_url: &str,
) -> Result<Vec<Selector>, SelectorError> {
    with_budget(|| parse_each(kind, raws, hub_url))
}

fn parse_each<'a>(
    kind: SelectorKind,
    raws: impl IntoIterator<Item = &'a str>,
    hub_url: &str,
) -> Result<Vec<Selector>, SelectorError> {
    let mut selectors = Vec::new();
    for raw in raws {
        if selectors.len() == MAX_SELECTORS {
            return Err(SelectorError::TooComplex(format!(
                "more than {MAX_SELECTORS} selectors"
            )));
        }
        selectors.push(Selector::parse_in(kind, raw, hub_url)?);
    }
    Ok(selectors)
}

/// draft-08: a matcher value has no C0 or C1 control, no DEL and no format character (`Cf`).
fn check_draft08_value(raw: &str) -> Result<(), SelectorError> {
    use icu_properties::props::GeneralCategory;
    use icu_properties::CodePointMapData;
    let categories = CodePointMapData::<GeneralCategory>::new();
    for c in raw.chars() {
        if c.is_control() {
            return Err(SelectorError::Invalid(format!(
                "control character U+{:04X}",
                u32::from(c)
            )));
        }
        if categories.get(c) == GeneralCategory::Format {
            return Err(SelectorError::Invalid(format!(
                "format character U+{:04X}",
                u32::from(c)
            )));
        }
    }
    Ok(())
}

/// Whether any of `selectors` covers any of `topics` (an update matches a subscription when one
/// of its topics, canonical or alternate, is selected).
pub fn any_matches(selectors: &[Selector], topics: &[String]) -> bool {
    topics
        .iter()
        .any(|topic| selectors.iter().any(|selector| selector.matches(topic)))
}

/// Whether every one of `topics` is covered by some selector (a publisher needs a right on each
/// topic of its update, canonical and alternate).
pub fn all_covered(selectors: &[Selector], topics: &[String]) -> bool {
    !topics.is_empty()
        && topics
            .iter()
            .all(|topic| selectors.iter().any(|selector| selector.matches(topic)))
}

#[cfg(test)]
mod tests;
