use profiling_core::profiled;

#[profiled]
pub const fn constant() -> u8 {
    1
}

fn main() {}
