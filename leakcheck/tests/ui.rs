//! The attribute's accepted and rejected forms, compiled by trybuild.
//! trybuild builds each file as a binary, where `#[test]` strips the
//! function: what shows is what the macro reports and the checks it emits
//! beside the function. It also replaces the rustflags, so the files build
//! without `--cfg tokio_unstable` (count-only), unless
//! `CARGO_ENCODED_RUSTFLAGS`, which overrides trybuild's, turns it on.
//! Regenerate expected errors with `TRYBUILD=overwrite`.

#[test]
fn attribute_forms() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
    let unstable_forced = std::env::var("CARGO_ENCODED_RUSTFLAGS")
        .is_ok_and(|flags| flags.contains("tokio_unstable"));
    if !unstable_forced {
        cases.compile_fail("tests/ui/count-only-fail/*.rs");
    }
}
