use profiling_core::profiled;

#[profiled(name = "  ")]
fn blank() {}

fn main() {}
