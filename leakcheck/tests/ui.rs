//! The attribute's accepted and rejected forms, compiled by trybuild.
//! Regenerate expected errors with `TRYBUILD=overwrite`.

#[test]
fn attribute_forms() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
