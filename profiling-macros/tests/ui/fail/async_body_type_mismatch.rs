// Type errors in an instrumented async body point at the user's code, as without
// the attribute, thanks to the fake return edge.
use profiling_core::profiled;

#[profiled]
async fn wrong_type() -> u32 {
    "not a number"
}

#[profiled]
async fn wrong_error() -> Result<u8, std::fmt::Error> {
    let n: u8 = "1".parse()?;
    Ok(n)
}

fn main() {}
