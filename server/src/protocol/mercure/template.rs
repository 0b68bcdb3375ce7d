//! draft-07 topic selectors that are RFC 6570 URI templates (up to level 4), matched the way the
//! reference hub matches them: the template becomes an anchored regular expression in which every
//! expression is optional, its operator's prefix and separator are literal, and each value is a
//! run of the characters that operator leaves unencoded (plus `%XX` triplets). Variable names and
//! `:N` prefixes do not constrain the match.
//!
//! Bounded: at most [`MAX_TEMPLATE_EXPRESSIONS`] expressions and [`MAX_TEMPLATE_VARIABLES`]
//! variables, and the compiled program under [`REGEX_SIZE_LIMIT`] bytes. The regex crate matches
//! in time linear in the topic's length (no backtracking engine).

use regex::{Regex, RegexBuilder};

use super::SelectorError;

/// Most `{...}` expressions one template may hold.
pub const MAX_TEMPLATE_EXPRESSIONS: usize = 16;
/// Most variables over all of a template's expressions.
pub const MAX_TEMPLATE_VARIABLES: usize = 32;
/// Bound on one compiled selector's program (and lazy DFA cache), in bytes.
pub(super) const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// RFC 3986 unreserved characters, as a regex class body.
const UNRESERVED: &str = r"A-Za-z0-9\-\._~";
/// RFC 3986 reserved characters (gen-delims and sub-delims), as a regex class body.
const RESERVED: &str = r"\:\/\?\#\[\]\@\!\$\&'\(\)\*\+\,\;\=";

/// How one operator expands (RFC 6570 appendix A).
struct Operator {
    /// Written before the first defined value.
    first: &'static str,
    /// Written between values.
    separator: &'static str,
    /// `;`, `?` and `&` expand to `name=value`.
    named: bool,
    /// `+` and `#` leave reserved characters unencoded.
    reserved: bool,
}

fn operator(c: u8) -> Option<Operator> {
    let (first, separator, named, reserved) = match c {
        b'+' => ("", ",", false, true),
        b'#' => ("#", ",", false, true),
        b'.' => (".", ".", false, false),
        b'/' => ("/", "/", false, false),
        b';' => (";", ";", true, false),
        b'?' => ("?", "&", true, false),
        b'&' => ("&", "&", true, false),
        _ => return None,
    };
    Some(Operator {
        first,
        separator,
        named,
        reserved,
    })
}

const SIMPLE: Operator = Operator {
    first: "",
    separator: ",",
    named: false,
    reserved: false,
};

/// One variable of an expression.
struct VarSpec {
    explode: bool,
}

/// Compiles `raw` as a URI template. `Ok(None)`: `raw` is not a valid template (a draft-07
/// selector that is not a template is still a valid selector: it matches by equality).
pub(super) fn compile(raw: &str) -> Result<Option<Regex>, SelectorError> {
    let mut pattern = String::with_capacity(raw.len() * 2 + 2);
    pattern.push('^');
    let mut expressions = 0usize;
    let mut variables = 0usize;
    let mut rest = raw;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let Some(end) = after.find('}') else {
                return Ok(None);
            };
            let body = &after[..end];
            rest = &after[end + 1..];
            expressions += 1;
            if expressions > MAX_TEMPLATE_EXPRESSIONS {
                return Err(SelectorError::TooComplex(format!(
                    "more than {MAX_TEMPLATE_EXPRESSIONS} template expressions"
                )));
            }
            let Some((op, vars)) = parse_expression(body) else {
                return Ok(None);
            };
            variables += vars.len();
            if variables > MAX_TEMPLATE_VARIABLES {
                return Err(SelectorError::TooComplex(format!(
                    "more than {MAX_TEMPLATE_VARIABLES} template variables"
                )));
            }
            expression_regex(&mut pattern, &op, &vars);
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            let literal = &rest[..end];
            if !valid_literals(literal) {
                return Ok(None);
            }
            pattern.push_str(&regex::escape(literal));
            rest = &rest[end..];
        }
    }
    if expressions == 0 {
        return Ok(None);
    }
    pattern.push('$');
    RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|_| SelectorError::TooComplex("the template compiles too large".into()))
}

/// `operator? varspec ("," varspec)*`; `None` when malformed.
fn parse_expression(body: &str) -> Option<(Operator, Vec<VarSpec>)> {
    let first = *body.as_bytes().first()?;
    let (op, list) = match operator(first) {
        Some(op) => (op, &body[1..]),
        // Reserved for future extensions (RFC 6570 section 2.2).
        None if matches!(first, b'=' | b',' | b'!' | b'@' | b'|') => return None,
        None => (SIMPLE, body),
    };
    let vars = list
        .split(',')
        .map(parse_varspec)
        .collect::<Option<Vec<_>>>()?;
    Some((op, vars))
}

/// `varname [":" max-length | "*"]`.
fn parse_varspec(spec: &str) -> Option<VarSpec> {
    let (name, explode) = match spec.strip_suffix('*') {
        Some(name) => (name, true),
        None => match spec.split_once(':') {
            Some((name, max)) => {
                let digits = max.as_bytes();
                let ok = (1..=4).contains(&digits.len())
                    && digits[0] != b'0'
                    && digits.iter().all(u8::is_ascii_digit);
                if !ok {
                    return None;
                }
                (name, false)
            }
            None => (spec, false),
        },
    };
    valid_varname(name).then_some(VarSpec { explode })
}

/// `varchar *( ["."] varchar )`, varchar = ALPHA / DIGIT / "_" / pct-encoded.
fn valid_varname(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes[0] == b'.' || bytes[bytes.len() - 1] == b'.' {
        return false;
    }
    let mut i = 0;
    let mut previous_dot = false;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                if !pct_triplet(bytes, i) {
                    return false;
                }
                i += 3;
                previous_dot = false;
                continue;
            }
            b'.' if previous_dot => return false,
            b'.' => previous_dot = true,
            b if b.is_ascii_alphanumeric() || b == b'_' => previous_dot = false,
            _ => return false,
        }
        i += 1;
    }
    true
}

fn pct_triplet(bytes: &[u8], i: usize) -> bool {
    bytes.len() > i + 2 && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit()
}

/// RFC 6570 `literals`: any character but CTL, SP, `"`, `'`, `%` (outside a triplet), `<`, `>`,
/// `\`, `^`, `` ` ``, `{`, `|`, `}`; non-ASCII only from `ucschar` / `iprivate`.
fn valid_literals(literal: &str) -> bool {
    let bytes = literal.as_bytes();
    let mut chars = literal.char_indices();
    while let Some((i, c)) = chars.next() {
        let ok = match c {
            '%' => {
                if !pct_triplet(bytes, i) {
                    return false;
                }
                chars.next();
                chars.next();
                true
            }
            '!' | '#' | '$' | '&' | '('..=';' | '=' | '?'..='[' | ']' | '_' | 'a'..='z' | '~' => {
                true
            }
            c if c.is_ascii() => false,
            c => ucschar_or_iprivate(c),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn ucschar_or_iprivate(c: char) -> bool {
    let c = u32::from(c);
    matches!(c,
        0xA0..=0xD7FF | 0xE000..=0xF8FF | 0xF900..=0xFDCF | 0xFDF0..=0xFFEF
        | 0xE1000..=0xEFFFD | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
        || (0x10000..=0xDFFFD).contains(&c) && (c & 0xFFFF) <= 0xFFFD
}

/// The regex one expression matches: optional as a whole (an undefined variable expands to
/// nothing), its prefix, one value, then up to one more value per further variable (any number
/// when a variable is exploded), each after the separator.
fn expression_regex(pattern: &mut String, op: &Operator, vars: &[VarSpec]) {
    let any_explode = vars.iter().any(|v| v.explode);
    pattern.push_str("(?:");
    pattern.push_str(&regex::escape(op.first));
    value_regex(pattern, op, op.named || vars[0].explode);
    if vars.len() > 1 || any_explode {
        pattern.push_str("(?:");
        pattern.push_str(&regex::escape(op.separator));
        value_regex(pattern, op, op.named || any_explode);
        pattern.push(')');
        if any_explode {
            pattern.push('*');
        } else {
            pattern.push_str(&format!("{{0,{}}}", vars.len() - 1));
        }
    }
    pattern.push_str(")?");
}

/// A run of the characters an expansion leaves as they are, or `%XX` triplets. Lists join with
/// `,`; named and exploded expansions add `=`.
fn value_regex(pattern: &mut String, op: &Operator, with_equals: bool) {
    pattern.push_str("(?:[");
    pattern.push_str(UNRESERVED);
    if op.reserved {
        pattern.push_str(RESERVED);
    } else {
        pattern.push_str(r"\,");
        if with_equals {
            pattern.push_str(r"\=");
        }
    }
    pattern.push_str("]|%[0-9A-Fa-f]{2})*");
}
