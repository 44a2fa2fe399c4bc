//! `cargo leakcheck adopt` on fixture workspaces.

use crate::support::{Copy, cargo_leakcheck, fixture, leakcheck_crate};

#[test]
fn rewrites_every_tokio_test_byte_for_byte_and_inherits_the_dependency() {
    let copy = Copy::committed("adopt/workspace-deps");
    let run = cargo_leakcheck(copy.root(), &["adopt"], &[]);
    assert_eq!(run.code, 0, "{run:?}");

    let expected = std::fs::read_to_string(fixture("adopt/expected/app-lib.rs")).unwrap();
    assert_eq!(copy.read("app/src/lib.rs"), expected);
    assert_eq!(
        copy.read("app/src/net.rs"),
        "#[cfg(test)]\nmod tests {\n    #[leakcheck::test]\n    async fn in_a_module_file() {}\n}\n"
    );
    assert!(
        copy.read("app/tests/it.rs")
            .starts_with("#[leakcheck::test]\nasync fn integration()")
    );
    // toml_edit keeps the comment closing an empty table after its entries.
    assert_eq!(
        copy.read("app/Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ntokio.workspace = true   # inherited\n\n[dev-dependencies]\nleakcheck.workspace = true\n# nothing else yet\n"
    );
    assert!(
        copy.read("Cargo.toml").ends_with(
            "# the runtime\ntokio = { version = \"1\", features = [\"rt\", \"macros\"] }\nleakcheck = \"0.1\"\n"
        ),
        "{}",
        copy.read("Cargo.toml")
    );
    // Only packages that gained a #[leakcheck::test] get the dependency.
    let untouched =
        std::fs::read_to_string(fixture("adopt/workspace-deps/untouched/Cargo.toml")).unwrap();
    assert_eq!(copy.read("untouched/Cargo.toml"), untouched);

    assert!(
        run.stdout.contains("app/src/lib.rs: 5 attributes"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("app/src/net.rs: 1 attribute"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("app/tests/it.rs: 1 attribute"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Cargo.toml: leakcheck added to [workspace.dependencies]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "app/Cargo.toml: dev-dependency added for package `app`: leakcheck.workspace = true"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("rewrote 7 attributes in 3 files, edited 2 manifests"),
        "{}",
        run.stdout
    );
    // The attribute a macro generates cannot be rewritten: said, with its line.
    assert!(
        run.stderr
            .contains("app/src/lib.rs:10: #[tokio::test] inside a macro body was not rewritten"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_second_run_has_nothing_to_change() {
    let copy = Copy::committed("adopt/workspace-deps");
    assert_eq!(cargo_leakcheck(copy.root(), &["adopt"], &[]).code, 0);
    copy.git(&["commit", "--quiet", "--all", "-m", "adopted"]);
    let before = copy.snapshot();

    let again = cargo_leakcheck(copy.root(), &["adopt"], &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.stdout, "cargo leakcheck adopt: nothing to change\n");
    let check = cargo_leakcheck(copy.root(), &["adopt", "--check"], &[]);
    assert_eq!(check.code, 0, "{check:?}");
    assert_eq!(copy.snapshot(), before);
}

#[test]
fn check_lists_what_would_change_writes_nothing_and_exits_1() {
    let copy = Copy::committed("adopt/workspace-deps");
    // A dirty tree does not matter to --check: it writes nothing.
    copy.write("untouched/src/lib.rs", "#[test]\nfn edited() {}\n");
    let before = copy.snapshot();
    let run = cargo_leakcheck(copy.root(), &["adopt", "--check"], &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .starts_with("cargo leakcheck adopt --check: would change\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("app/src/lib.rs: 5 attributes"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("app/Cargo.toml: dev-dependency added"),
        "{}",
        run.stdout
    );
    assert_eq!(copy.snapshot(), before);
}

#[test]
fn a_dirty_tree_or_no_repository_is_refused_unless_allowed() {
    let copy = Copy::committed("adopt/workspace-deps");
    copy.write("untouched/src/lib.rs", "#[test]\nfn edited() {}\n");
    let before = copy.snapshot();
    let refused = cargo_leakcheck(copy.root(), &["adopt"], &[]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("has uncommitted changes (untouched/src/lib.rs)"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--allow-dirty"),
        "{}",
        refused.stderr
    );
    assert_eq!(copy.snapshot(), before);
    let allowed = cargo_leakcheck(copy.root(), &["adopt", "--allow-dirty"], &[]);
    assert_eq!(allowed.code, 0, "{allowed:?}");
    assert!(
        copy.read("app/tests/it.rs")
            .starts_with("#[leakcheck::test]")
    );

    let outside = Copy::of("adopt/workspace-deps");
    let refused = cargo_leakcheck(outside.root(), &["adopt"], &[]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("is not in a git repository"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--allow-no-vcs"),
        "{}",
        refused.stderr
    );
    let allowed = cargo_leakcheck(outside.root(), &["adopt", "--allow-no-vcs"], &[]);
    assert_eq!(allowed.code, 0, "{allowed:?}");
}

#[test]
fn path_writes_a_path_dependency_and_creates_the_table() {
    let copy = Copy::committed("adopt/single");
    let path = leakcheck_crate();
    let run = cargo_leakcheck(
        copy.root(),
        &["adopt", "--path", path.to_str().unwrap()],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        copy.read("Cargo.toml"),
        format!(
            "[package]\nname = \"single\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ntokio = {{ version = \"1\", features = [\"rt\", \"macros\"] }}\n\n[dev-dependencies]\nleakcheck = {{ path = \"{}\" }}\n",
            path.display()
        )
    );
    // The trybuild-style fixture is in no target: never read, never changed.
    assert_eq!(
        copy.read("tests/ui/not_rust.rs"),
        std::fs::read_to_string(fixture("adopt/single/tests/ui/not_rust.rs")).unwrap()
    );
}

#[test]
fn a_path_that_is_not_the_leakcheck_crate_is_refused() {
    let copy = Copy::committed("adopt/single");
    let run = cargo_leakcheck(
        copy.root(),
        &["adopt", "--path", copy.root().to_str().unwrap()],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("holds package Some(\"single\"), not `leakcheck`"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn an_unparsable_file_is_named_and_nothing_is_written() {
    let copy = Copy::of("adopt/workspace-deps");
    copy.write("app/src/net.rs", "#[tokio::test]\nasync fn broken( {}\n");
    let before = copy.snapshot();
    let run = cargo_leakcheck(copy.root(), &["adopt", "--allow-no-vcs"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.starts_with("cargo leakcheck: error: "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("app/src/net.rs: is not valid Rust at line 2"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_eq!(copy.snapshot(), before);
}
