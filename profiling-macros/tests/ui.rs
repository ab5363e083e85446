//! Compile tests of `#[profiled]`: `ui/pass` must build and run, `ui/fail` must fail
//! with exactly the diagnostics in the `.stderr` beside each file.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite`, then review every span.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
