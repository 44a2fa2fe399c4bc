//! `cargo leakcheck test` and `baseline` end to end, on a fixture crate
//! with a path dependency on this repository's leakcheck: one leaking test,
//! one clean one, and a build that needs the user's `RUSTFLAGS`. Every
//! build goes to one fixed target directory under this workspace's
//! `target/`, so reruns are warm; the fixture crate alone is rebuilt.

use std::path::PathBuf;

use crate::support::{Copy, Run, cargo_leakcheck, leakcheck_crate};

/// The target directory every fixture build shares.
fn shared_target_dir() -> PathBuf {
    leakcheck_crate().join("../target/leakcheck-e2e")
}

fn leaky_crate() -> Copy {
    let copy = Copy::of("e2e/leaky");
    let manifest = copy
        .read("Cargo.toml")
        .replace("LEAKCHECK_PATH", leakcheck_crate().to_str().unwrap());
    copy.write("Cargo.toml", &manifest);
    // This workspace's lock file: the same versions as here, no resolution online.
    let lock = std::fs::read_to_string(leakcheck_crate().join("../Cargo.lock")).unwrap();
    copy.write("Cargo.lock", &lock);
    copy
}

fn run(copy: &Copy, command: &str) -> Run {
    run_with(copy, command, &[])
}

fn run_with(copy: &Copy, command: &str, env: &[(&str, &str)]) -> Run {
    let target = shared_target_dir();
    let mut env = env.to_vec();
    env.push(("RUSTFLAGS", "--cfg user_flag"));
    env.push(("CARGO_TARGET_DIR", target.to_str().unwrap()));
    cargo_leakcheck(copy.root(), &[command, "--offline", "--tests"], &env)
}

#[test]
fn test_fails_on_the_leak_then_baseline_records_it_and_test_passes() {
    let copy = leaky_crate();
    let target = shared_target_dir().join("leakcheck");

    // The user's RUSTFLAGS are kept (the fixture does not build without
    // them) and leakcheck's are added: spawn sites are known.
    let leaked = run(&copy, "test");
    assert_eq!(leaked.code, 1, "{leaked:?}");
    assert!(
        leaked.stderr.contains(
            "RUSTFLAGS=\"--cfg user_flag --cfg tokio_unstable -C force-frame-pointers=yes\""
        ),
        "{}",
        leaked.stderr
    );
    assert!(
        leaked
            .stderr
            .contains(&format!("building in {}", target.display())),
        "{}",
        leaked.stderr
    );
    assert!(
        leaked
            .stdout
            .contains("leakcheck: 1 task leaked in 1 of 1 report, from 1 spawn site"),
        "{}",
        leaked.stdout
    );
    assert!(
        leaked
            .stdout
            .contains("── src/lib.rs:9:5 · 1 task in 1 test"),
        "{}",
        leaked.stdout
    );
    assert!(
        leaked.stdout.contains("tests: leaks::leaks_a_task"),
        "{}",
        leaked.stdout
    );
    assert!(
        leaked.stderr.contains(
            "1 test failed on leaks and nothing else failed: leaks::leaks_a_task; exit code 1"
        ),
        "{}",
        leaked.stderr
    );
    assert!(
        leaked
            .stdout
            .contains("test result: FAILED. 2 passed; 1 failed"),
        "{}",
        leaked.stdout
    );
    // The leak fails its test, with the report in libtest's output.
    assert!(
        leaked.stdout.contains("test leaks_a_task ... FAILED"),
        "{}",
        leaked.stdout
    );
    assert!(
        leaked
            .stdout
            .contains("leakcheck: 1 leaked task in `leaks::leaks_a_task`"),
        "{}",
        leaked.stdout
    );
    let page = std::fs::read_to_string(target.join("report.html")).expect("the HTML page");
    assert!(page.contains("src/lib.rs:9:5"));

    // A failure that is not a leak is told apart.
    let other = run_with(&copy, "test", &[("LEAKY_FAIL", "1")]);
    assert_eq!(other.code, 100, "{other:?}");
    assert!(
        other.stderr.contains("1 test failed for other reasons than leaks: fails_when_asked; 1 test leaked; exit code 100"),
        "{}",
        other.stderr
    );

    let recorded = run(&copy, "baseline");
    assert_eq!(recorded.code, 0, "{recorded:?}");
    assert!(
        recorded.stderr.contains("with 1 entry from 1 leaking test"),
        "{}",
        recorded.stderr
    );
    let baseline = leakcheck::Baseline::parse(&copy.read("leakcheck-baseline.json")).unwrap();
    assert_eq!(baseline.entries.len(), 1);
    assert_eq!(baseline.entries[0].test, "leaks::leaks_a_task");
    assert_eq!(baseline.entries[0].file, "src/lib.rs");
    assert_eq!(
        baseline.entries[0].function.as_deref(),
        Some("leaky::start_forever")
    );

    let screened = run(&copy, "test");
    assert_eq!(screened.code, 0, "{screened:?}");
    assert!(
        screened
            .stderr
            .contains("leaks recorded in leakcheck-baseline.json do not fail their tests"),
        "{}",
        screened.stderr
    );
    assert!(
        screened.stderr.contains("no test leaked a task"),
        "{}",
        screened.stderr
    );

    // cargo-nextest runs the same build, one process per test.
    let target_dir = shared_target_dir();
    let nextest = cargo_leakcheck(
        copy.root(),
        &["nextest", "run", "--offline"],
        &[
            ("RUSTFLAGS", "--cfg user_flag"),
            ("CARGO_TARGET_DIR", target_dir.to_str().unwrap()),
        ],
    );
    assert_eq!(nextest.code, 0, "{nextest:?}");
    assert!(nextest.stderr.contains("3 passed"), "{}", nextest.stderr);

    // Doctests are built by rustdoc, which reads the crate with rustdoc's
    // flags (so the user passes theirs there too): extended as well.
    let doctests = cargo_leakcheck(
        copy.root(),
        &["test", "--offline", "--doc"],
        &[
            ("RUSTFLAGS", "--cfg user_flag"),
            ("RUSTDOCFLAGS", "--cfg user_flag"),
            ("CARGO_TARGET_DIR", target_dir.to_str().unwrap()),
        ],
    );
    assert_eq!(doctests.code, 0, "{doctests:?}");
    assert!(
        doctests.stdout.contains("test result: ok. 1 passed"),
        "{}",
        doctests.stdout
    );

    // The leak fixed: the baseline entry is reported as fixed.
    let fixed = copy.read("tests/leaks.rs").replace(
        "let _forgotten = leaky::start_forever();",
        "leaky::start_forever().abort();",
    );
    copy.write("tests/leaks.rs", &fixed);
    let after_fix = run(&copy, "test");
    assert_eq!(after_fix.code, 0, "{after_fix:?}");
    assert!(
        after_fix.stderr.contains("1 baseline entry no longer leak"),
        "{}",
        after_fix.stderr
    );
    assert!(
        after_fix
            .stderr
            .contains("fixed: `leaks::leaks_a_task`: src/lib.rs:9 in leaky::start_forever"),
        "{}",
        after_fix.stderr
    );
}
