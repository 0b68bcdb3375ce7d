//! draft-08 `urlpattern` matchers: WHATWG URL Pattern (the `urlpattern` crate), relative patterns
//! and topics resolved against the hub's URL, `ignoreCase` off.
//!
//! The draft's security section: URL patterns compile to regular expressions, a denial-of-service
//! vector with a backtracking engine. Here every component compiles with the regex crate (linear
//! time matching, no backreferences or lookaround) under a program size limit, so compiling one
//! pattern is bounded too; a pattern has at most [`MAX_PATTERN_GROUPS`] groups.

use std::fmt;

use regex::{Regex, RegexBuilder};
use url::Url;
use urlpattern::regexp::RegExp;
use urlpattern::{
    RegexSyntax, UrlPattern, UrlPatternInit, UrlPatternMatchInput, UrlPatternOptions,
};

use super::template::REGEX_SIZE_LIMIT;
use super::SelectorError;

/// Most groups (`:name`, `(regexp)`, `*`) one URL pattern may hold, over all its components.
pub const MAX_PATTERN_GROUPS: usize = 16;

/// The base relative patterns and topics resolve against when the caller names no hub URL.
pub const DEFAULT_HUB_URL: &str = "https://hub.invalid/.well-known/mercure";

/// A regex with a bounded program, as the URL pattern's engine.
#[derive(Debug)]
pub(super) struct BoundedRegex(Regex);

impl RegExp for BoundedRegex {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, _flags: &str, _force_eval: bool) -> Result<Self, ()> {
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(BoundedRegex)
            .map_err(|_| ())
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        // Only whether it matches is used; captures are not needed.
        self.0.is_match(text).then(Vec::new)
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
    }
}

/// A compiled URL pattern with the base it resolves topics against.
pub(super) struct Pattern {
    pattern: UrlPattern<BoundedRegex>,
    base: Url,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pattern")
            .field("pathname", &self.pattern.pathname())
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl Pattern {
    /// Compiles `raw` against the hub URL `base`.
    pub(super) fn compile(raw: &str, base: &str) -> Result<Pattern, SelectorError> {
        // A cheap bound before any compiling: each group needs one of these characters (the
        // scheme's `:` counts too, hence the slack).
        let markers = raw
            .bytes()
            .filter(|b| matches!(b, b':' | b'(' | b'*'))
            .count();
        if markers > MAX_PATTERN_GROUPS * 2 + 2 {
            return Err(too_many_groups());
        }
        let base = Url::parse(base)
            .map_err(|_| SelectorError::Invalid("the hub URL is not an absolute URL".into()))?;
        let init =
            UrlPatternInit::parse_constructor_string::<BoundedRegex>(raw, Some(base.clone()))
                .map_err(|e| SelectorError::Invalid(format!("not a URL pattern: {e}")))?;
        let options = UrlPatternOptions {
            ignore_case: false,
            ..UrlPatternOptions::default()
        };
        let pattern = UrlPattern::<BoundedRegex>::parse(init, options)
            .map_err(|e| SelectorError::Invalid(format!("not a URL pattern: {e}")))?;
        // A component left out of the pattern is the wildcard `*` (one group, matching
        // anything): those are not counted.
        let groups = [
            &pattern.protocol,
            &pattern.username,
            &pattern.password,
            &pattern.hostname,
            &pattern.port,
            &pattern.pathname,
            &pattern.search,
            &pattern.hash,
        ]
        .iter()
        .filter(|component| component.pattern_string != "*")
        .map(|component| component.group_name_list.len())
        .sum::<usize>();
        if groups > MAX_PATTERN_GROUPS {
            return Err(too_many_groups());
        }
        Ok(Pattern { pattern, base })
    }

    /// Whether `topic` (resolved against the hub URL) matches; a topic that is not a URL
    /// reference matches no pattern.
    pub(super) fn matches(&self, topic: &str) -> bool {
        let Ok(url) = Url::options().base_url(Some(&self.base)).parse(topic) else {
            return false;
        };
        self.pattern
            .test(UrlPatternMatchInput::Url(url))
            .unwrap_or(false)
    }
}

fn too_many_groups() -> SelectorError {
    SelectorError::TooComplex(format!("more than {MAX_PATTERN_GROUPS} URL pattern groups"))
}
