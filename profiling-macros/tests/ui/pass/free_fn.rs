//! Free functions: generics, where clauses, `impl Trait`, `unsafe`, `extern "C"`,
//! early return and `?`, attributes and visibility kept as written.
#![deny(warnings)]

use profiling_core::profiled;
use std::fmt::Display;
use std::num::ParseIntError;

#[profiled]
fn plain() {}

/// Doc comments and other attributes are kept.
#[profiled]
#[inline]
#[must_use]
pub fn double(x: u32) -> u32 {
    x * 2
}

#[profiled]
pub(crate) fn generic<T, U: Clone>(t: T, u: &U) -> (T, U)
where
    T: Display + Default,
{
    (t, u.clone())
}

#[profiled]
fn lifetimes<'a, 'b: 'a>(a: &'a str, _b: &'b str) -> &'a str {
    a
}

#[profiled]
fn returns_impl_trait(n: u32) -> impl Iterator<Item = u32> + Clone {
    (0..n).map(|i| i * i)
}

#[profiled]
fn returns_impl_display() -> impl Display {
    "shown"
}

#[profiled]
fn early_return(x: i32) -> &'static str {
    if x < 0 {
        return "negative";
    }
    for i in 0..x {
        if i == 3 {
            return "three";
        }
    }
    "small"
}

#[profiled]
fn question_mark(a: &str, b: &str) -> Result<i64, ParseIntError> {
    let a: i64 = a.parse()?;
    let b: i64 = b.parse()?;
    Ok(a + b)
}

#[derive(Debug)]
struct MyError;

impl From<ParseIntError> for MyError {
    fn from(_: ParseIntError) -> Self {
        MyError
    }
}

#[profiled]
fn question_mark_converts(a: &str) -> Result<u8, MyError> {
    Ok(a.parse::<u8>()?)
}

#[profiled]
fn option_question_mark(v: &[u8]) -> Option<u8> {
    let first = v.first()?;
    Some(*first + 1)
}

/// # Safety
/// `p` must be valid for reads.
#[profiled]
unsafe fn read(p: *const u32) -> u32 {
    unsafe { *p }
}

#[profiled]
extern "C" fn c_abi(x: i32) -> i32 {
    x + 1
}

#[profiled]
fn with_inner_attribute() -> u8 {
    #![allow(unused_variables)]
    let unused = 1;
    2
}

#[profiled]
fn r#match(r#in: u8) -> u8 {
    r#in
}

#[profiled]
fn loop_break() -> u8 {
    loop {
        break 7;
    }
}

#[allow(dead_code)]
#[profiled]
fn diverges() -> ! {
    std::process::exit(1)
}

#[profiled]
fn mut_params(mut v: Vec<u8>, (a, b): (u8, u8)) -> Vec<u8> {
    v.push(a);
    v.push(b);
    v
}

#[profiled]
fn recursive(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        recursive(n - 1) + recursive(n - 2)
    }
}

fn main() {
    plain();
    assert_eq!(double(21), 42);
    assert_eq!(generic(5u8, &"x"), (5, "x"));
    assert_eq!(lifetimes("a", "b"), "a");
    assert_eq!(returns_impl_trait(4).collect::<Vec<_>>(), [0, 1, 4, 9]);
    assert_eq!(returns_impl_display().to_string(), "shown");
    assert_eq!(early_return(-1), "negative");
    assert_eq!(early_return(10), "three");
    assert_eq!(early_return(2), "small");
    assert_eq!(question_mark("2", "3"), Ok(5));
    assert!(question_mark("2", "x").is_err());
    assert!(question_mark_converts("300").is_err());
    assert_eq!(option_question_mark(&[]), None);
    assert_eq!(option_question_mark(&[1]), Some(2));
    assert_eq!(unsafe { read(&5) }, 5);
    assert_eq!(c_abi(1), 2);
    let f: extern "C" fn(i32) -> i32 = c_abi;
    assert_eq!(f(2), 3);
    assert_eq!(with_inner_attribute(), 2);
    assert_eq!(r#match(3), 3);
    assert_eq!(loop_break(), 7);
    assert_eq!(mut_params(vec![0], (1, 2)), [0, 1, 2]);
    assert_eq!(recursive(10), 55);
}
