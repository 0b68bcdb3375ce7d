//! The Mercure hub's parsers of untrusted input (`transport::mercure`): the publish form, the
//! subscribe query with its selectors, and the SSE event written for an accepted update.
//!
//! Input: byte 0 picks the parser (even: publish body, odd: subscribe query), the rest is the
//! body or query. Invariants: an accepted publish names 1 to `MAX_TOPICS` topics, none `*` nor
//! in the reserved namespace, within the field bounds, with no control or format character in a
//! topic, id or type; the event written for it is only `id:`, `event:`, `retry:` and `data:`
//! lines ending in a blank line, with no CR anywhere, so no data can start a field of its own;
//! an accepted subscribe has 1 to `MAX_SELECTORS` selectors and every selector can be matched
//! against the update's topics without panicking.
#![no_main]

use herald::protocol::mercure::MAX_SELECTORS;
use herald::transport::mercure::form::{
    is_forbidden_char, MAX_ID_BYTES, MAX_TOPICS, MAX_TOPIC_BYTES, MAX_TYPE_BYTES,
};
use herald::transport::mercure::{
    format_event, is_reserved_topic, parse_publish_form, parse_subscribe_query,
};
use libfuzzer_sys::fuzz_target;

const HUB: &str = "https://hub.example/apps/1/.well-known/mercure";

fn clean(s: &str) -> bool {
    !s.chars().any(is_forbidden_char)
}

fn check_publish(body: &[u8]) {
    let Ok(form) = parse_publish_form(body) else {
        return;
    };
    assert!(!form.topics.is_empty() && form.topics.len() <= MAX_TOPICS);
    for topic in &form.topics {
        assert!(topic != "*" && !is_reserved_topic(topic), "{topic:?}");
        assert!(topic.len() <= MAX_TOPIC_BYTES && clean(topic), "{topic:?}");
    }
    if let Some(id) = &form.id {
        assert!(id.len() <= MAX_ID_BYTES && clean(id), "{id:?}");
    }
    if let Some(event_type) = &form.event_type {
        assert!(event_type.len() <= MAX_TYPE_BYTES && clean(event_type));
    }
    let data = form.data.as_deref().unwrap_or("");
    let id = form.id.as_deref().unwrap_or("urn:uuid:0");
    let event = format_event(id, form.event_type.as_deref(), form.retry, data);
    let text = std::str::from_utf8(&event).expect("an event is UTF-8");
    assert!(!text.contains('\r'), "{text:?}");
    let body = text.strip_suffix("\n\n").expect("an event ends in a blank line");
    let mut data_lines = 0;
    for line in body.split('\n') {
        let known = ["id: ", "event: ", "retry: ", "data: "]
            .iter()
            .any(|field| line.starts_with(field));
        assert!(known, "a line of no field of ours: {line:?}");
        if line.starts_with("data: ") {
            data_lines += 1;
        }
    }
    let expected = data.replace("\r\n", "\n").replace('\r', "\n").split('\n').count();
    assert_eq!(data_lines, expected);
    let topics = form.topics;
    // A subscription on the canonical topic selects the update.
    if let Ok(query) = parse_subscribe_query(
        &form_urlencoded_pair("topic", &topics[0]),
        HUB,
    ) {
        assert!(query
            .selectors
            .iter()
            .any(|(_, _, selector)| selector.matches(&topics[0])));
    }
}

fn form_urlencoded_pair(name: &str, value: &str) -> String {
    let mut out = String::from(name);
    out.push('=');
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn check_subscribe(query: &[u8]) {
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let Ok(parsed) = parse_subscribe_query(query, HUB) else {
        return;
    };
    assert!(!parsed.selectors.is_empty() && parsed.selectors.len() <= MAX_SELECTORS);
    let topics = [
        "https://example.com/books/1",
        "https://hub.example/apps/1/books/1",
        "books",
        query,
    ];
    for (_, raw, selector) in &parsed.selectors {
        for topic in topics {
            let _ = selector.matches(topic);
        }
        let _ = selector.matches(raw);
    }
}

/// Whether a panic was raised inside the `urlpattern` crate, whose parser Herald calls under
/// `catch_unwind` (`protocol::mercure::pattern`): such a panic is caught and the selector
/// refused, as in the server, so it must not abort the run the way libFuzzer's hook does for
/// every panic. A panic anywhere else, or one not caught, still ends the run as a crash.
fn inside_urlpattern(info: &std::panic::PanicHookInfo<'_>) -> bool {
    info.location()
        .is_some_and(|at| at.file().contains("/urlpattern-"))
}

fuzz_target!(init: {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !inside_urlpattern(info) {
            abort(info);
        }
    }));
}, |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_publish(rest);
    } else {
        check_subscribe(rest);
    }
});
