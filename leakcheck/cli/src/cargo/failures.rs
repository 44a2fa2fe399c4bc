//! Which tests failed, read from the test runner's output while it is
//! forwarded unchanged to the user: libtest's `test name ... FAILED` lines,
//! its terse `name --- FAILED` lines and its closing `failures:` list (on
//! stdout), and nextest's `FAIL [ 0.01s] (2/2) binary name` lines (on
//! stderr). Together with the leak reports this tells a leak from any
//! other failure.
//!
//! Hand-written because neither runner has a stable machine-readable
//! output (libtest's `--format json` and nextest's libtest-json need
//! nightly or an experimental switch); only these line shapes are read.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::thread::JoinHandle;

/// nextest's status words for a test that did not pass.
const NEXTEST_FAILURES: &[&str] = &[
    "FAIL", "TIMEOUT", "ABORT", "SIGSEGV", "SIGABRT", "SIGKILL", "SIGBUS", "SIGILL", "SIGFPE",
];

/// Reads failed test names from lines of runner output.
#[derive(Debug, Default)]
pub struct FailureParser {
    /// The names found (libtest's and nextest's names: the test's path
    /// inside its crate, such as `tests::serves`).
    pub failed: BTreeSet<String>,
    in_failure_list: bool,
}

impl FailureParser {
    /// Reads one line (without its newline).
    pub fn line(&mut self, line: &str) {
        if self.in_failure_list {
            match line.strip_prefix("    ") {
                Some(name) if !name.trim().is_empty() && !name.contains(' ') => {
                    self.failed.insert(name.to_owned());
                    return;
                }
                _ => self.in_failure_list = false,
            }
        }
        if line == "failures:" {
            self.in_failure_list = true;
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            if !name.contains(' ') {
                self.failed.insert(name.to_owned());
            }
        } else if let Some(name) = line.strip_suffix(" --- FAILED") {
            if !name.contains(' ') {
                self.failed.insert(name.to_owned());
            }
        } else if let Some(name) = nextest_failure(line) {
            self.failed.insert(name.to_owned());
        }
    }
}

/// The test name of a nextest `FAIL [   0.870s] (2/2) crate::binary name` line.
fn nextest_failure(line: &str) -> Option<&str> {
    let line = line.trim_start();
    let (status, rest) = line.split_once(" [")?;
    if !NEXTEST_FAILURES.contains(&status) {
        return None;
    }
    let (_, rest) = rest.split_once("] ")?;
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    if words
        .first()
        .is_some_and(|w| w.starts_with('(') && w.ends_with(')'))
    {
        words.remove(0);
    }
    match words.as_slice() {
        [_binary, name] => Some(name),
        _ => None,
    }
}

/// Copies `from` to `to` line by line as it arrives, feeding each line to
/// a parser; the thread returns the parser's findings.
pub fn forward(
    from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
) -> JoinHandle<BTreeSet<String>> {
    std::thread::spawn(move || {
        let mut parser = FailureParser::default();
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // A closed terminal or pipe must not stop the run.
                    let _ = to.write_all(&line).and_then(|()| to.flush());
                    let text = String::from_utf8_lossy(&line);
                    parser.line(text.trim_end_matches(['\n', '\r']));
                }
            }
        }
        parser.failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(output: &str) -> Vec<String> {
        let mut parser = FailureParser::default();
        for line in output.lines() {
            parser.line(line);
        }
        parser.failed.into_iter().collect()
    }

    #[test]
    fn libtest_pretty_output() {
        let output = "running 3 tests\ntest tests::ok ... ok\ntest tests::leaks ... FAILED\ntest tests::panics ... FAILED\n\nfailures:\n\n---- tests::leaks stdout ----\nthread panicked\n    at src/lib.rs\n\nfailures:\n    tests::leaks\n    tests::panics\n\ntest result: FAILED. 1 passed; 2 failed;\n";
        assert_eq!(failed(output), ["tests::leaks", "tests::panics"]);
    }

    #[test]
    fn libtest_terse_output_names_failures_in_the_list() {
        let output = "running 2 tests\n. 1/2\nleaks_a_task --- FAILED\n\nfailures:\n\n---- leaks_a_task stdout ----\n\nfailures:\n    leaks_a_task\n\ntest result: FAILED.\n";
        assert_eq!(failed(output), ["leaks_a_task"]);
    }

    #[test]
    fn nextest_status_lines() {
        let output = "        PASS [   0.032s] (1/3) leaky::leaks aborts_its_task\n        FAIL [   0.870s] (2/3) leaky::leaks leaks_a_task\n     SIGSEGV [   0.100s] leaky tests::crashes\n     Summary [   0.875s] 3 tests run: 1 passed, 2 failed, 0 skipped\n        FAIL [   0.870s] (2/3) leaky::leaks leaks_a_task\n";
        assert_eq!(failed(output), ["leaks_a_task", "tests::crashes"]);
    }

    #[test]
    fn a_test_that_prints_failures_is_not_misread() {
        let output =
            "failures:\nnot indented, so the list is over\ntest output with spaces ... FAILED\n";
        assert!(failed(output).is_empty());
    }
}
