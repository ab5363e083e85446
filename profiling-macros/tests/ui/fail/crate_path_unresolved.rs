use profiling_core::profiled;

#[profiled(crate = ::not_a_crate)]
fn wrong_crate() {}

fn main() {}
