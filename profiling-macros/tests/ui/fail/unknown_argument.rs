use profiling_core::profiled;

#[profiled(level = "info")]
fn unknown() {}

#[profiled(name = "ok", target = "x")]
fn unknown_after_a_known_one() {}

fn main() {}
