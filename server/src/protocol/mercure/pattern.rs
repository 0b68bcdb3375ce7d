//! draft-08 `urlpattern` matchers: WHATWG URL Pattern (the `urlpattern` crate), relative patterns
//! and topics resolved against the hub's URL, `ignoreCase` off.
//!
//! The draft's security section: URL patterns compile to regular expressions, a denial-of-service
//! vector with a backtracking engine. Here every component compiles with the regex crate's engine
//! (linear time matching, no backreferences or lookaround), and compiling is bounded three ways:
//! - Unicode is off: URL components are ASCII once parsed (hosts in punycode, the rest
//!   percent-encoded) and JavaScript's `\w`, `\d` are ASCII classes, so a `\w` is one small class
//!   rather than thousands of UTF-8 ranges (`\pL` and friends are refused);
//! - each component's program is under [`PATTERN_REGEX_SIZE_LIMIT`] bytes, and a pattern has at
//!   most [`MAX_PATTERN_GROUPS`] groups;
//! - the programs compiled for one list of selectors (a subscribe request, a token's right) share
//!   a budget of [`COMPILE_BUDGET`] bytes ([`with_budget`]): once spent, the next pattern is
//!   refused (`TooComplex`) before its components compile further.

use std::cell::Cell;
use std::fmt;

use regex_automata::meta;
use regex_automata::util::syntax;
use url::Url;
use urlpattern::regexp::RegExp;
use urlpattern::{
    RegexSyntax, UrlPattern, UrlPatternInit, UrlPatternMatchInput, UrlPatternOptions,
};

use super::SelectorError;

/// Most groups (`:name`, `(regexp)`, `*`) one URL pattern may hold, over all its components.
pub const MAX_PATTERN_GROUPS: usize = 16;

/// Bound on one URL pattern component's compiled program (and its lazy DFA cache), in bytes.
pub const PATTERN_REGEX_SIZE_LIMIT: usize = 32 * 1024;

/// Bound on the heap the programs compiled for one list of selectors hold, in bytes (a URL
/// pattern's eight components take about 25 KiB when simple: 32 of them fit).
pub const COMPILE_BUDGET: usize = 1536 * 1024;

/// The base relative patterns and topics resolve against when the caller names no hub URL.
pub const DEFAULT_HUB_URL: &str = "https://hub.invalid/.well-known/mercure";

thread_local! {
    /// The bytes of program the current list of selectors may still compile (`None`: outside
    /// [`with_budget`], where one pattern gets the whole budget).
    static BUDGET: Cell<Option<usize>> = const { Cell::new(None) };
    /// Set when a compile was refused for want of budget.
    static EXHAUSTED: Cell<bool> = const { Cell::new(false) };
    /// Heap held by the programs compiled since the last [`take_compiled_bytes`] (tests).
    static COMPILED: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` (which compiles a list of selectors on this thread) with a fresh budget of
/// [`COMPILE_BUDGET`] bytes shared by every URL pattern it compiles.
pub fn with_budget<T>(f: impl FnOnce() -> T) -> T {
    let outer = BUDGET.with(|b| b.replace(Some(COMPILE_BUDGET)));
    let result = f();
    BUDGET.with(|b| b.set(outer));
    result
}

/// The heap held by the URL pattern programs compiled on this thread since the last call.
pub fn take_compiled_bytes() -> usize {
    COMPILED.with(|c| c.replace(0))
}

/// One component's program: the regex crate's engine with Unicode off and a bounded size.
pub(super) struct BoundedRegex {
    regex: meta::Regex,
    source: String,
}

impl fmt::Debug for BoundedRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoundedRegex").field(&self.source).finish()
    }
}

impl RegExp for BoundedRegex {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, _flags: &str, _force_eval: bool) -> Result<Self, ()> {
        let budget = BUDGET.with(Cell::get);
        let limit = budget.map_or(PATTERN_REGEX_SIZE_LIMIT, |left| {
            left.min(PATTERN_REGEX_SIZE_LIMIT)
        });
        if limit == 0 {
            EXHAUSTED.with(|e| e.set(true));
            return Err(());
        }
        let config = meta::Config::new()
            .nfa_size_limit(Some(limit))
            .onepass_size_limit(Some(limit))
            .dfa_size_limit(Some(limit))
            .hybrid_cache_capacity(limit)
            .onepass(false)
            .backtrack(false);
        let regex = meta::Builder::new()
            .configure(config)
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .build(pattern)
            .map_err(|_| {
                if budget.is_some_and(|left| left < PATTERN_REGEX_SIZE_LIMIT) {
                    EXHAUSTED.with(|e| e.set(true));
                }
            })?;
        let used = regex.memory_usage();
        COMPILED.with(|c| c.set(c.get().saturating_add(used)));
        if let Some(left) = budget {
            if used > left {
                EXHAUSTED.with(|e| e.set(true));
                BUDGET.with(|b| b.set(Some(0)));
                return Err(());
            }
            BUDGET.with(|b| b.set(Some(left - used)));
        }
        Ok(BoundedRegex {
            regex,
            source: pattern.to_owned(),
        })
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        // Only whether it matches is used; captures are not needed.
        self.regex.is_match(text.as_bytes()).then(Vec::new)
    }

    fn pattern_string(&self) -> &str {
        &self.source
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
        // The crate's constructor-string parser counts IPv6 brackets from where the hostname
        // starts (after `//`, or after the `@` that ends a user name) and underflows on a `]`
        // its count has not seen opened (found by `random_selectors_never_panic`, then by the
        // `mercure_form` fuzz target with the `[` before an `@`): such a `]` is refused here,
        // counting from each `/` and `@` too (outside regular-expression groups, which the
        // crate reads as one token: `([^/]+)` stays accepted), and any other panic is caught
        // below.
        let mut depth = 0usize;
        let mut regex = 0usize;
        for b in raw.bytes() {
            match b {
                b'(' => regex += 1,
                b')' => regex = regex.saturating_sub(1),
                _ if regex > 0 => {}
                b'/' | b'@' => depth = 0,
                b'[' => depth += 1,
                b']' if depth == 0 => {
                    return Err(SelectorError::Invalid("unbalanced ']'".into()));
                }
                b']' => depth -= 1,
                _ => {}
            }
        }
        if BUDGET.with(Cell::get) == Some(0) {
            return Err(over_budget());
        }
        let base = Url::parse(base)
            .map_err(|_| SelectorError::Invalid("the hub URL is not an absolute URL".into()))?;
        let parsed = std::panic::catch_unwind(|| {
            let init =
                UrlPatternInit::parse_constructor_string::<BoundedRegex>(raw, Some(base.clone()))?;
            let options = UrlPatternOptions {
                ignore_case: false,
                ..UrlPatternOptions::default()
            };
            UrlPattern::<BoundedRegex>::parse(init, options)
        });
        if EXHAUSTED.with(|e| e.replace(false)) {
            return Err(over_budget());
        }
        let pattern = match parsed {
            Ok(Ok(pattern)) => pattern,
            Ok(Err(e)) => return Err(SelectorError::Invalid(format!("not a URL pattern: {e}"))),
            Err(_) => return Err(SelectorError::Invalid("not a URL pattern".into())),
        };
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
        std::panic::catch_unwind(|| self.pattern.test(UrlPatternMatchInput::Url(url)))
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false)
    }
}

fn over_budget() -> SelectorError {
    SelectorError::TooComplex(format!(
        "the URL patterns compile to more than {COMPILE_BUDGET} bytes"
    ))
}

fn too_many_groups() -> SelectorError {
    SelectorError::TooComplex(format!("more than {MAX_PATTERN_GROUPS} URL pattern groups"))
}
