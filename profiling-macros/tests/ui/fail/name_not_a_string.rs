use profiling_core::profiled;

#[profiled(name = 5)]
fn number() {}

#[profiled(name = my_name)]
fn ident() {}

fn main() {}
