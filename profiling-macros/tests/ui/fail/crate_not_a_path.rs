use profiling_core::profiled;

#[profiled(crate = "profiling_core")]
fn string() {}

#[profiled(crate = 5)]
fn number() {}

fn main() {}
