use profiling_core::profiled;

#[profiled(span = "loud")]
fn loud() {}

fn main() {}
