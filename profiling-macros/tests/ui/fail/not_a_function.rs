use profiling_core::profiled;

#[profiled]
struct Struct;

#[profiled]
pub enum Enum {}

#[profiled]
impl Struct {}

#[profiled]
mod module {}

#[profiled]
static STATIC: u8 = 0;

fn main() {}
