//! Property tests (proptest) of the two readers that take bytes from
//! outside: the document reader (and every command that renders what it
//! read) and the HTTP client. Inputs are mutations of the seed corpus kept
//! in the repository (`tests/fixtures/`: the document fixtures, and
//! `tests/fixtures/corpus/http/` for answers); case counts are bounded so
//! the suite stays fast. cargo-fuzz needs a nightly toolchain, hence proptest
//! on stable; failures proptest finds are kept in `proptest-regressions/`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

use crate::diff::{self, Input};
use crate::document::{self, Document, LoadedReport};
use crate::http::{Client, ClientOptions};
use crate::{flamegraph, html, summary};

/// Cases per document property.
const DOCUMENT_CASES: u32 = 384;
/// Cases for the HTTP client: each one is a loopback connection.
const HTTP_CASES: u32 = 64;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every file of the given fixture directories, read once.
fn seeds(dirs: &[&str]) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for dir in dirs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
            .expect("corpus directory")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.is_file())
            .collect();
        paths.sort();
        seeds.extend(paths.iter().map(|path| std::fs::read(path).expect("seed")));
    }
    assert!(!seeds.is_empty(), "no seeds in {dirs:?}");
    seeds
}

fn document_seeds() -> Vec<Vec<u8>> {
    seeds(&["reports", "snapshots", "clean", "hostile", "bad"])
}

/// One byte-level change: truncate, overwrite, insert or delete.
#[derive(Debug, Clone)]
enum ByteEdit {
    Truncate(usize),
    Overwrite(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        any::<usize>().prop_map(ByteEdit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| ByteEdit::Overwrite(at, byte)),
        (
            any::<usize>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..16),
                Just(b"ffffffffffffffff".to_vec()),
                Just(b"\r\n\r\n".to_vec()),
                Just(b"18446744073709551616".to_vec()),
            ]
        )
            .prop_map(|(at, bytes)| ByteEdit::Insert(at, bytes)),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| ByteEdit::Delete(at, len)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            ByteEdit::Truncate(at) => bytes.truncate(at % len),
            ByteEdit::Overwrite(at, byte) => {
                if let Some(slot) = bytes.get_mut(at % len) {
                    *slot = *byte;
                }
            }
            ByteEdit::Insert(at, inserted) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, inserted.iter().copied());
            }
            ByteEdit::Delete(at, count) => {
                let at = at % len;
                let end = (at + count).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
        }
    }
    bytes
}

/// A JSON value that breaks assumptions: huge, negative, fractional, empty, wrong type.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::from(u64::MAX)),
        Just(Value::from(u64::from(u32::MAX) + 1)),
        Just(Value::from(-1)),
        Just(Value::from(0)),
        Just(Value::from(1e300)),
        Just(Value::from(2)),
        Just(Value::from("")),
        Just(Value::from("</code><script>x</script>|`;\n")),
        Just(Value::Array(Vec::new())),
        Just(Value::Object(serde_json::Map::new())),
        any::<u32>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

/// Replaces the `index`-th node (depth first, modulo the node count) by `with`.
fn replace_node(value: &mut Value, index: usize, with: Value) {
    fn count(value: &Value) -> usize {
        1 + match value {
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(fields) => fields.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(value: &mut Value, target: &mut usize, with: &mut Option<Value>) {
        if *target == 0 {
            if let Some(replacement) = with.take() {
                *value = replacement;
            }
            return;
        }
        *target -= 1;
        match value {
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, target, with)),
            Value::Object(fields) => fields.values_mut().for_each(|v| walk(v, target, with)),
            _ => {}
        }
    }
    let mut target = index % count(value);
    walk(value, &mut target, &mut Some(with));
}

/// Runs every command's pipeline on a parsed document, read twice (as two
/// files of a directory would be): nothing may panic.
fn render_everything(document: Document) {
    let path = PathBuf::from("mutated.json");
    let input = match document {
        Document::Report(report) => {
            let loaded = vec![
                LoadedReport {
                    path: path.clone(),
                    report: report.clone(),
                },
                LoadedReport {
                    path: path.clone(),
                    report,
                },
            ];
            let summary = summary::summarize(&loaded);
            summary::render_text(&summary);
            summary::render_github(&summary);
            let documents: Vec<Document> = loaded
                .iter()
                .map(|l| Document::Report(l.report.clone()))
                .collect();
            flamegraph::fold(&documents);
            html::render(&summary, "<svg></svg>", &loaded);
            Input::Reports(path.clone(), loaded)
        }
        Document::Snapshot(snapshot) => {
            flamegraph::fold(&[
                Document::Snapshot(snapshot.clone()),
                Document::Snapshot(snapshot.clone()),
            ]);
            Input::Snapshot(path.clone(), snapshot)
        }
    };
    let empty = match &input {
        Input::Reports(..) => Input::Reports(PathBuf::from("empty"), Vec::new()),
        Input::Snapshot(_, snapshot) => {
            let mut nothing = snapshot.clone();
            nothing.sites.clear();
            nothing.live = 0;
            Input::Snapshot(PathBuf::from("empty"), nothing)
        }
    };
    for (before, after) in [(&empty, &input), (&input, &empty), (&input, &input)] {
        let compared = diff::diff(before, after).expect("same kind");
        diff::render_text(&compared, true);
        diff::render_markdown(&compared, Some("https://example.invalid/blob/x"));
        serde_json::to_string(&compared).expect("plain data");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: DOCUMENT_CASES, ..ProptestConfig::default() })]

    #[test]
    fn mutated_bytes_are_read_or_refused_never_a_panic(
        seed in any::<proptest::sample::Index>(),
        edits in proptest::collection::vec(byte_edit(), 1..4),
    ) {
        let seeds = document_seeds();
        let bytes = apply(seeds[seed.index(seeds.len())].clone(), &edits);
        match document::parse(&bytes) {
            Ok(document) => render_everything(document),
            Err(problem) => prop_assert!(!problem.is_empty()),
        }
    }

    #[test]
    fn hostile_json_values_are_read_or_refused_never_a_panic(
        seed in any::<proptest::sample::Index>(),
        replacements in proptest::collection::vec((any::<usize>(), hostile_value()), 1..4),
    ) {
        let seeds = document_seeds();
        let Ok(mut value) = serde_json::from_slice::<Value>(&seeds[seed.index(seeds.len())]) else {
            return Ok(());
        };
        for (index, with) in replacements {
            replace_node(&mut value, index, with);
        }
        match document::parse(value.to_string().as_bytes()) {
            Ok(document) => render_everything(document),
            Err(problem) => prop_assert!(!problem.is_empty()),
        }
    }
}

/// Serves `answer` to one connection on 127.0.0.1 after reading the request
/// head, then closes it; returns the URL.
fn serve(answer: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let server = std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let _ = stream.write_all(&answer);
    });
    (url, server)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: HTTP_CASES, ..ProptestConfig::default() })]

    #[test]
    fn mutated_http_answers_are_a_body_or_an_error_never_a_panic(
        seed in any::<proptest::sample::Index>(),
        edits in proptest::collection::vec(byte_edit(), 0..4),
    ) {
        let seeds = seeds(&["corpus/http"]);
        let answer = apply(seeds[seed.index(seeds.len())].clone(), &edits);
        let (url, server) = serve(answer);
        let client = Client::new(&url, &ClientOptions {
            timeout: Duration::from_secs(2),
            bearer_token: None,
            ca_cert: None,
        }).expect("a valid URL");
        match client.get() {
            Ok(body) => prop_assert!(body.len() as u64 <= crate::http::MAX_RESPONSE_BYTES),
            Err(problem) => prop_assert!(!problem.is_empty()),
        }
        server.join().expect("server thread");
    }
}
