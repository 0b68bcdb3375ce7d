//! Rules about the sources themselves, checked by reading them: tests wait only through the
//! helpers (no test sleeps on a real timer of its own), and the wall clock and `std`'s monotonic
//! clock are read only in `server/src/clock.rs` (design invariant 11; `clippy.toml` says the same
//! to clippy).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("the directory is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn server_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `file:line: text` for each line of `source` holding one of `needles`.
fn lines_with(file: &Path, source: &str, needles: &[String]) -> Vec<String> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| needles.iter().any(|needle| line.contains(needle.as_str())))
        .map(|(n, line)| format!("{}:{}: {}", file.display(), n + 1, line.trim()))
        .collect()
}

#[test]
fn tests_wait_only_through_the_helpers() {
    // Spelled in pieces so that this file obeys its own rule.
    let sleep = ["sle", "ep"].concat();
    let needles = vec![
        format!("{sleep}("),
        format!("{sleep}_until("),
        format!("thread::{sleep}"),
    ];
    let mut offenders = Vec::new();
    for file in rust_files(&server_dir().join("tests")) {
        if file.file_name().is_some_and(|name| name == "helpers.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&file).expect("the test file is readable");
        offenders.extend(lines_with(&file, &source, &needles));
    }
    assert!(
        offenders.is_empty(),
        "tests wait through helpers.rs (wait_until, pause, expect_silence, ...), not a {sleep} \
         of their own:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_helpers_wait_only_through_the_bounded_pause() {
    // The one real-time wait in helpers.rs is `pause`, which refuses more than `MAX_PAUSE` (1 s):
    // no test sleeps longer than that in one step.
    let file = server_dir().join("tests/it/helpers.rs");
    let source = std::fs::read_to_string(&file).expect("helpers.rs is readable");
    let sleep = ["sle", "ep"].concat();
    let needles = vec![
        format!("{sleep}("),
        format!("{sleep}_until("),
        format!("thread::{sleep}"),
    ];
    let sleeps = lines_with(&file, &source, &needles);
    assert_eq!(
        sleeps.len(),
        1,
        "only `pause` sleeps in helpers.rs:\n{}",
        sleeps.join("\n")
    );
    let pause = source
        .find("pub async fn pause(")
        .expect("helpers.rs has pause");
    let body = &source[pause..];
    let body = &body[..body.find("\n}\n").expect("pause ends")];
    assert!(
        body.contains("wait <= MAX_PAUSE") && body.contains(&format!("{sleep}(wait)")),
        "pause checks its bound before it sleeps:\n{body}"
    );
    assert!(
        source.contains("pub const MAX_PAUSE: Duration = Duration::from_secs(1);"),
        "MAX_PAUSE is one second"
    );
}

/// The lines of `source` that read the wall clock or `std`'s monotonic clock.
fn clock_reads(file: &Path, source: &str) -> Vec<String> {
    let tokio_instant = source.contains("use tokio::time::Instant;")
        || source.lines().any(|line| {
            let line = line.trim();
            line.starts_with("use tokio::time::{") && line.contains("Instant")
        });
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let std_group = code.contains("std::time::{")
            && (code.contains("Instant") || code.contains("SystemTime"));
        let bare_instant_now = code.contains("Instant::now()")
            && !code.contains("tokio::time::Instant::now()")
            && !tokio_instant;
        if code.contains("SystemTime::now")
            || code.contains("std::time::Instant")
            || code.contains("std::time::SystemTime")
            || std_group
            || bare_instant_now
        {
            found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
        }
    }
    found
}

#[test]
fn only_the_clock_module_reads_the_wall_clock_or_std_instant() {
    let src = server_dir().join("src");
    let mut offenders = Vec::new();
    for file in rust_files(&src) {
        if file == src.join("clock.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&file).expect("the source file is readable");
        offenders.extend(clock_reads(&file, &source));
    }
    assert!(
        offenders.is_empty(),
        "read the wall clock through herald::clock::Clock and monotonic time through \
         tokio::time::Instant (design invariant 11):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_clock_rule_sees_what_it_should() {
    let file = Path::new("example.rs");
    let reads = |source: &str| clock_reads(file, source).len();
    assert_eq!(reads("let t = std::time::SystemTime::now();"), 1);
    assert_eq!(
        reads("use std::time::{Duration, Instant};\nInstant::now();"),
        2
    );
    assert_eq!(reads("use std::time::{SystemTime, UNIX_EPOCH};"), 1);
    assert_eq!(reads("let t = std::time::Instant::now();"), 1);
    assert_eq!(
        reads("use tokio::time::Instant;\nlet t = Instant::now();"),
        0
    );
    assert_eq!(
        reads("use tokio::time::{sleep, Instant};\nlet t = Instant::now();"),
        0
    );
    assert_eq!(reads("let t = tokio::time::Instant::now();"), 0);
    assert_eq!(reads("use std::time::Duration; // not Instant::now()"), 0);
}
