use profiling_core::profiled;

#[profiled(name = "a", name = "b")]
fn name_twice() {}

#[profiled(crate = ::profiling_core, crate = ::profiling_core)]
fn crate_twice() {}

#[profiled(span, span = "debug")]
fn span_twice() {}

fn main() {}
