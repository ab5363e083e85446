//! Generated code cannot clash with the user's names: locals are `__profiled_*` and
//! mixed-site, the callsite static lives in its own block, and every path is absolute.
#![deny(warnings)]
#![allow(non_upper_case_globals, dead_code)]

use ::profiling_core::profiled;

// Shadows nothing the expansion uses: it says `::core::...` and `::profiling_core::...`.
mod core {}
mod profiling_core {}
struct Callsite;
macro_rules! line {
    () => {
        "not a line"
    };
}

#[::profiling_core::profiled]
fn same_names(__profiled_guard: u8) -> u8 {
    static __PROFILED_CALLSITE: u8 = 1;
    let __profiled_span = 2;
    __profiled_guard + __PROFILED_CALLSITE + __profiled_span
}

#[profiled(span)]
async fn same_names_async(__profiled_span: u8) -> u8 {
    let __profiled_fake_return = __profiled_span;
    __profiled_fake_return
}

fn main() {
    assert_eq!(same_names(3), 6);
    let rt = ::tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(same_names_async(4)), 4);
    assert_eq!(line!(), "not a line");
}
