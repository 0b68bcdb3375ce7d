//! Reading the state scripts' answers.

use redis::Value;
use serde_json::value::RawValue;

/// A script's answer as a list.
pub(super) fn list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

pub(super) fn int(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        _ => 0,
    }
}

pub(super) fn text(value: Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).unwrap_or_default(),
        Value::SimpleString(s) => s,
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

pub(super) fn texts(value: Value) -> Vec<String> {
    list(value).into_iter().map(text).collect()
}

/// Stored `user_info` back as JSON (`""`: none).
pub(super) fn info_of(stored: &str) -> Option<Box<RawValue>> {
    if stored.is_empty() {
        return None;
    }
    serde_json::from_str(stored).ok()
}
