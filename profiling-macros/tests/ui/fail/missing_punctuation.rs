use profiling_core::profiled;

#[profiled(name "a")]
fn missing_equals() {}

#[profiled(span name = "a")]
fn missing_comma() {}

fn main() {}
