use std::time::Duration;

use super::*;

fn d07(raw: &str) -> Selector {
    Selector::parse(SelectorKind::Draft07, raw).expect(raw)
}

fn pattern(raw: &str) -> Selector {
    Selector::parse_in(
        SelectorKind::MatchUrlPattern,
        raw,
        "https://hub.example.com/.well-known/mercure",
    )
    .expect(raw)
}

#[test]
fn the_wildcard_matches_everything_whatever_the_kind() {
    for kind in [
        SelectorKind::Draft07,
        SelectorKind::Match,
        SelectorKind::MatchExact,
        SelectorKind::MatchUrlPattern,
    ] {
        let any = Selector::parse(kind, "*").unwrap();
        assert_eq!(any, Selector::Any, "{kind:?}");
        assert!(any.matches("https://example.com/anything"));
        assert!(any.matches("not a url"));
    }
}

#[test]
fn draft07_spec_examples() {
    // The draft's book example and its alternate-topic authorization example.
    let books = d07("https://example.com/books/{id}");
    assert!(matches!(books, Selector::Template(_)));
    assert!(books.matches("https://example.com/books/1"));
    assert!(books.matches("https://example.com/books/foo-bar"));
    assert!(!books.matches("https://example.com/authors/1"));
    assert!(!books.matches("https://example.com/books/1/chapters/2"));
    // A selector matches its own text (comparing a template with another one).
    assert!(books.matches("https://example.com/books/{id}"));

    let user = d07("https://example.com/users/foo/{?topic}");
    assert!(
        user.matches("https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1")
    );
    assert!(user.matches("https://example.com/users/foo/"));
    assert!(!user.matches("https://example.com/users/bar/?topic=x"));
    assert!(!user.matches("https://example.com/users/foo/?topic=https://example.com/books/1"));

    let exact = d07("https://example.com/books/1");
    assert_eq!(exact, Selector::Exact("https://example.com/books/1".into()));
    assert!(exact.matches("https://example.com/books/1"));
    assert!(!exact.matches("https://example.com/books/10"));
}

#[test]
fn draft07_templates_up_to_level_four() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "/a/{x}",
            &["/a/", "/a/b", "/a/b,c", "/a/%20"],
            &["/a/b/c", "/a/b?c"],
        ),
        (
            "{+path}/here",
            &["/foo/bar/here", "/here", "/a?b#c/here"],
            &["/foo/bar", "here"],
        ),
        ("/x{#frag}", &["/x", "/x#a/b,c"], &["/x#a b"]),
        ("/file{.ext}", &["/file", "/file.json"], &["/file/json"]),
        (
            "/list{/segments*}",
            &["/list", "/list/a", "/list/a/b/c"],
            &["/list?x"],
        ),
        (
            "/m{;x,y}",
            &["/m;x=1;y=2", "/m;x=1", "/m"],
            &["/m;x=1;y=2;z=3"],
        ),
        (
            "/q{?x,y}",
            &["/q?x=1&y=2", "/q?x=1", "/q"],
            &["/q?x=1&y=2&z=3", "/q&x=1"],
        ),
        ("/q{?list*}", &["/q?a=1&b=2&c=3"], &["/q?a=1#f"]),
        (
            "/q?fixed=1{&x}",
            &["/q?fixed=1&x=2", "/q?fixed=1"],
            &["/q?fixed=1?x=2"],
        ),
        ("/p/{var:3}", &["/p/abc", "/p/abcdef"], &["/p/a/b"]),
        ("/u/{x,y}", &["/u/1,2", "/u/1", "/u/1,2,3"], &["/u/1/2"]),
    ];
    for (template, yes, no) in cases {
        let selector = d07(template);
        assert!(matches!(selector, Selector::Template(_)), "{template}");
        for topic in *yes {
            assert!(selector.matches(topic), "{template} should match {topic}");
        }
        for topic in *no {
            assert!(
                !selector.matches(topic),
                "{template} should not match {topic}"
            );
        }
    }
}

/// The reference hub (dunglas/mercure) matches a template with yosida95/uritemplate's
/// `Template::Regexp()`, which writes each value as an unbounded run and ignores `:N` (its
/// `Match()`, which bounds the prefix, is not what the hub calls). So `{id:3}` matches `12345`
/// there, and here too: a prefix modifier never narrows what a selector grants.
#[test]
fn draft07_prefix_modifiers_do_not_bound_the_match_as_in_the_reference_hub() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "{id:3}",
            &["12345", "", "123", "12,345", "%41%42%43%44"],
            &["12/345"],
        ),
        (
            "https://example.com/books/{id:1}",
            &["https://example.com/books/12345"],
            &["https://example.com/books/1/2"],
        ),
        ("/a{/seg:2}", &["/a/abcdef"], &["/a/ab/cd"]),
        ("/q{?x:1}", &["/q?x=longer"], &["/q?x=a&y=b"]),
        ("/r/{+path:2}", &["/r/a/b/c/d"], &["/r/a b"]),
    ];
    for (template, yes, no) in cases {
        let selector = d07(template);
        assert!(matches!(selector, Selector::Template(_)), "{template}");
        for topic in *yes {
            assert!(selector.matches(topic), "{template} should match {topic}");
        }
        for topic in *no {
            assert!(
                !selector.matches(topic),
                "{template} should not match {topic}"
            );
        }
    }
}

#[test]
fn draft07_strings_that_are_not_templates_match_by_equality() {
    for raw in [
        "https://example.com/{unclosed",
        "https://example.com/{bad name}",
        "https://example.com/{=reserved}",
        "with space {x}",
        "bad%zz{x}",
        "{x:0}",
        "{x:12345}",
        "{}",
        "}{",
    ] {
        let selector = d07(raw);
        assert_eq!(selector, Selector::Exact(raw.into()), "{raw}");
        assert!(selector.matches(raw));
    }
}

#[test]
fn selectors_are_bounded() {
    let long = "a".repeat(MAX_SELECTOR_BYTES + 1);
    for kind in [
        SelectorKind::Draft07,
        SelectorKind::Match,
        SelectorKind::MatchExact,
        SelectorKind::MatchUrlPattern,
    ] {
        assert_eq!(Selector::parse(kind, &long), Err(SelectorError::TooLong));
    }
    let many = "{a}".repeat(MAX_TEMPLATE_EXPRESSIONS + 1);
    assert!(matches!(
        Selector::parse(SelectorKind::Draft07, &many),
        Err(SelectorError::TooComplex(_))
    ));
    let vars = format!("{{{}}}", vec!["v"; MAX_TEMPLATE_VARIABLES + 1].join(","));
    assert!(matches!(
        Selector::parse(SelectorKind::Draft07, &vars),
        Err(SelectorError::TooComplex(_))
    ));
    // At the bounds it compiles.
    d07(&"{a}".repeat(MAX_TEMPLATE_EXPRESSIONS));
    d07(&"/{+a*}{?b*}{#c*}".repeat(MAX_TEMPLATE_EXPRESSIONS / 3));

    let groups = |n: usize| {
        let path: String = (0..n).map(|i| format!("/:p{i}")).collect();
        format!("https://example.com{path}")
    };
    assert!(matches!(
        Selector::parse(
            SelectorKind::MatchUrlPattern,
            &groups(MAX_PATTERN_GROUPS + 1)
        ),
        Err(SelectorError::TooComplex(_))
    ));
    assert!(pattern(&groups(MAX_PATTERN_GROUPS)).matches(&format!(
        "https://example.com{}",
        "/x".repeat(MAX_PATTERN_GROUPS)
    )));
    // The cheap bound before compiling: many group markers of any kind.
    let markers = format!("https://example.com/{}", "*".repeat(100));
    assert!(matches!(
        Selector::parse(SelectorKind::MatchUrlPattern, &markers),
        Err(SelectorError::TooComplex(_))
    ));

    let list: Vec<String> = (0..=MAX_SELECTORS).map(|i| format!("t{i}")).collect();
    let refused = parse_list(
        SelectorKind::Match,
        list.iter().map(String::as_str),
        DEFAULT_HUB_URL,
    );
    assert!(matches!(refused, Err(SelectorError::TooComplex(_))));
    let accepted = parse_list(
        SelectorKind::Match,
        list[..MAX_SELECTORS].iter().map(String::as_str),
        DEFAULT_HUB_URL,
    )
    .unwrap();
    assert_eq!(accepted.len(), MAX_SELECTORS);
}

#[test]
fn adversarial_inputs_compile_and_match_in_bounded_time() {
    let started = tokio::time::Instant::now();
    // The largest template allowed, every expression exploded, against a long topic that almost
    // matches: the regex crate is linear, a backtracking engine would not finish.
    let template = d07(&"{/a*}".repeat(MAX_TEMPLATE_EXPRESSIONS));
    let topic = format!("{}!", "/aaaaaaaa".repeat(8_000));
    assert!(!template.matches(&topic));
    // A classic catastrophic pattern inside a URL pattern's regexp group.
    let evil = pattern("https://example.com/:x((?:a+)+b)");
    assert!(!evil.matches(&format!("https://example.com/{}", "a".repeat(50_000))));
    assert!(evil.matches("https://example.com/aaab"));
    // A pattern whose program would be huge is refused instead of compiled.
    let huge = Selector::parse(
        SelectorKind::MatchUrlPattern,
        "https://example.com/:x((?:(?:a{100}){100}){100})",
    );
    assert!(huge.is_err(), "{huge:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn draft08_exact_matchers_compare_bytes() {
    for kind in [SelectorKind::Match, SelectorKind::MatchExact] {
        let exact = Selector::parse(kind, "https://example.com/books/{id}").unwrap();
        assert_eq!(
            exact,
            Selector::Exact("https://example.com/books/{id}".into())
        );
        assert!(!exact.matches("https://example.com/books/1"));
        assert!(exact.matches("https://example.com/books/{id}"));
        let case = Selector::parse(kind, "https://example.com/Foo").unwrap();
        assert!(!case.matches("https://example.com/foo"));
        assert!(!case.matches("https://EXAMPLE.com/Foo"));
        assert!(Selector::parse(kind, "").unwrap().matches(""));
    }
}

#[test]
fn draft08_url_patterns_per_the_spec_examples() {
    let books = pattern("https://example.com/books/:id");
    assert!(books.matches("https://example.com/books/1"));
    assert!(books.matches("https://example.com/books/abc"));
    assert!(!books.matches("https://example.com/books/1/2"));
    assert!(!books.matches("https://example.com/authors/1"));
    assert!(!books.matches("http://example.com/books/1"));
    // The host is case-insensitive (URL canonicalization), the path is not.
    assert!(books.matches("https://EXAMPLE.com/books/1"));
    assert!(!books.matches("https://example.com/Books/1"));

    let namespace = pattern("https://example.com/users/42/*");
    assert!(namespace.matches("https://example.com/users/42/books/1"));
    assert!(!namespace.matches("https://example.com/users/43/books/1"));

    // Relative patterns and topics resolve against the hub's URL.
    let events = pattern("/.well-known/mercure/subscriptions/:topic/:subscriber");
    assert!(events.matches("/.well-known/mercure/subscriptions/t/s"));
    assert!(events.matches("https://hub.example.com/.well-known/mercure/subscriptions/t/s"));
    assert!(!events.matches("https://other.example.com/.well-known/mercure/subscriptions/t/s"));
    // A topic that is not a URL reference matches no pattern.
    assert!(!pattern("https://example.com/*").matches("http://[::1"));
    assert!(!books.matches("bar"));
}

#[test]
fn draft08_values_are_refused_with_a_reason() {
    for kind in [
        SelectorKind::Match,
        SelectorKind::MatchExact,
        SelectorKind::MatchUrlPattern,
    ] {
        for bad in [
            "https://example.com/\u{0}",
            "a\nb",
            "a\rb",
            "del\u{7f}",
            "c1\u{85}",
            "zero\u{200b}width",
            "bom\u{feff}",
        ] {
            assert!(
                matches!(Selector::parse(kind, bad), Err(SelectorError::Invalid(_))),
                "{kind:?} {bad:?}"
            );
        }
    }
    for bad in [
        "https://example.com/:",
        "https://example.com/(",
        "https://example.com/:x((?=a))",
    ] {
        assert!(
            matches!(
                Selector::parse(SelectorKind::MatchUrlPattern, bad),
                Err(SelectorError::Invalid(_)) | Err(SelectorError::TooComplex(_))
            ),
            "{bad}"
        );
    }
    // draft-07 selectors are any string.
    assert!(Selector::parse(SelectorKind::Draft07, "a\u{200b}b").is_ok());
}

#[test]
fn draft08_parameter_names() {
    assert_eq!(SelectorKind::from_param("match"), Some(SelectorKind::Match));
    assert_eq!(
        SelectorKind::from_param("match_exact"),
        Some(SelectorKind::MatchExact)
    );
    assert_eq!(
        SelectorKind::from_param("match_urlpattern"),
        Some(SelectorKind::MatchUrlPattern)
    );
    assert_eq!(SelectorKind::from_param("match_regex"), None);
    assert!(SelectorKind::is_reserved_param("match_regex"));
    assert!(SelectorKind::is_reserved_param("MATCHES"));
    assert!(!SelectorKind::is_reserved_param("topic"));
    assert!(!SelectorKind::is_reserved_param("mat"));
}

#[test]
fn an_update_matches_when_any_topic_is_selected_and_publishing_needs_every_topic() {
    let selectors = vec![d07("https://example.com/users/foo/{?topic}")];
    let topics = vec![
        "https://example.com/books/1".to_owned(),
        "https://example.com/users/foo/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1".to_owned(),
    ];
    assert!(any_matches(&selectors, &topics));
    assert!(!all_covered(&selectors, &topics));
    assert!(all_covered(&[Selector::Any], &topics));
    assert!(!all_covered(&[Selector::Any], &[]));
    assert!(!any_matches(&[], &topics));
}

#[test]
fn a_url_pattern_that_crashed_the_parser_is_refused() {
    // `]` before `[` in the host underflowed the urlpattern crate's bracket depth.
    for raw in ["https://ex]ample.com/", "https://a]b[c/", "]"] {
        assert!(
            matches!(
                Selector::parse(SelectorKind::MatchUrlPattern, raw),
                Err(SelectorError::Invalid(_))
            ),
            "{raw}"
        );
    }
}

/// Random text from URL-pattern and template punctuation (60,000 rounds were run once while
/// writing this; 1,500 keep the test short).
#[test]
fn random_selectors_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let alphabet: Vec<char> = ":/*(){}?#+\\.-_a1[]|=,;&%@!$' é\u{200b}".chars().collect();
    for _ in 0..1_500 {
        let len = rng.random_range(0..40);
        let raw: String = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        for kind in [SelectorKind::Draft07, SelectorKind::MatchUrlPattern] {
            for text in [raw.clone(), format!("https://example.com/{raw}")] {
                if let Ok(selector) = Selector::parse(kind, &text) {
                    selector.matches(&text);
                    selector.matches("https://example.com/a/b?c=d#e");
                    selector.matches(&raw);
                }
            }
        }
    }
}

/// The review's request: 32 URL patterns of 8 `\w` groups each. With Unicode classes each
/// pattern compiled to megabytes; ASCII-only programs keep the whole list small.
#[test]
fn thirty_two_word_class_patterns_compile_small() {
    let raw = r"(\w)://(\w)\:(\w)@(\w).com/:p(\w)?(\w)#(\w)";
    take_compiled_bytes();
    let list = parse_list(
        SelectorKind::MatchUrlPattern,
        std::iter::repeat_n(raw, MAX_SELECTORS),
        DEFAULT_HUB_URL,
    );
    let compiled = take_compiled_bytes();
    eprintln!(
        "32 word-class patterns: {compiled} bytes, {:?}",
        list.as_ref().map(Vec::len)
    );
    assert!(list.is_ok(), "{list:?}");
    assert!(compiled <= COMPILE_BUDGET, "{compiled} bytes");
    // Unicode classes made each of these patterns several megabytes.
    assert!(compiled / MAX_SELECTORS < 64 * 1024, "{compiled} bytes");
    // `\w` and `\d` are ASCII classes, as in JavaScript.
    let word = pattern(r"https://example.com/:x(\w+)");
    assert!(word.matches("https://example.com/abc_9"));
    assert!(!word.matches("https://example.com/%C3%A9"));
}

/// Patterns each near the per-component limit: the list's budget runs out and the rest are
/// refused before compiling, so the heap held stays under the budget plus one program.
#[test]
fn a_list_of_heavy_url_patterns_runs_out_of_its_compile_budget() {
    let heavy = "https://example.com/:x([a-z]{200})/:y([a-z]{200})";
    take_compiled_bytes();
    let one = Selector::parse(SelectorKind::MatchUrlPattern, heavy);
    let single = take_compiled_bytes();
    eprintln!("one heavy pattern: {single} bytes, {one:?}");
    assert!(one.is_ok(), "one heavy pattern alone compiles");
    let list = parse_list(
        SelectorKind::MatchUrlPattern,
        std::iter::repeat_n(heavy, MAX_SELECTORS),
        DEFAULT_HUB_URL,
    );
    let compiled = take_compiled_bytes();
    eprintln!("32 heavy patterns: {compiled} bytes");
    match list {
        Err(SelectorError::TooComplex(why)) => assert!(why.contains("compile"), "{why}"),
        other => panic!("expected the budget to run out: {other:?}"),
    }
    assert!(
        compiled <= COMPILE_BUDGET + PATTERN_REGEX_SIZE_LIMIT,
        "{compiled} bytes"
    );
    // A fresh list gets a fresh budget.
    assert!(parse_list(SelectorKind::MatchUrlPattern, [heavy], DEFAULT_HUB_URL).is_ok());
}

/// The `mercure_form` fuzz target's find: a `[` before the `@` that ends a user name is not
/// counted by the crate's parser, which then underflowed on the hostname's `]`. Refused before
/// the crate sees it, while a regular-expression group holding `/` in a class still compiles.
#[test]
fn a_bracket_opened_before_the_hostname_is_refused_and_regex_classes_still_compile() {
    for raw in [
        "http-s53A:idttps://[et3Alpattern=httpstps53@:ia:idps%Fs]+str3A%authory{/otni=x",
        "https://a[b@host]/",
        "ht[tp://host]/",
    ] {
        // Refused by the check, not by a panic caught inside the crate.
        assert_eq!(
            Selector::parse(SelectorKind::MatchUrlPattern, raw).err(),
            Some(SelectorError::Invalid("unbalanced ']'".into())),
            "{raw}"
        );
    }
    for raw in [
        "https://example.com/books/([^/]+)",
        "https://user@example.com/books/:id([0-9]+)",
        "https://example.com/[a]/b",
    ] {
        let selector = Selector::parse(SelectorKind::MatchUrlPattern, raw).expect(raw);
        let _ = selector.matches("https://example.com/books/1");
    }
    assert!(Selector::parse(
        SelectorKind::MatchUrlPattern,
        "https://example.com/books/([^/]+)"
    )
    .unwrap()
    .matches("https://example.com/books/1"));
}
