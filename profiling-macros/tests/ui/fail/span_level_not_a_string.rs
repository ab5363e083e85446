use profiling_core::profiled;

#[profiled(span = 3)]
fn number() {}

#[profiled(span = INFO)]
fn ident() {}

fn main() {}
