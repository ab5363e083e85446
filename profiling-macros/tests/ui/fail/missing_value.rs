use profiling_core::profiled;

#[profiled(name)]
fn name_without_value() {}

#[profiled(crate)]
fn crate_without_value() {}

#[profiled(name = )]
fn nothing_after_equals() {}

#[profiled(span =)]
fn no_level() {}

fn main() {}
