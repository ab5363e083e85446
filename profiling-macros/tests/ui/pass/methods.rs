//! Methods with every receiver, associated functions and trait methods.
#![deny(warnings)]

use profiling_core::profiled;
use std::fmt::Debug;

#[derive(Debug, Clone, PartialEq)]
struct Counter {
    n: u32,
}

impl Counter {
    #[profiled]
    fn new() -> Self {
        Counter { n: 0 }
    }

    // No receiver and no `Self`: named like a free function, still compiles.
    #[profiled]
    fn start_value() -> u32 {
        0
    }

    #[profiled]
    fn get(&self) -> u32 {
        self.n
    }

    #[profiled]
    fn bump(&mut self) -> &mut Self {
        self.n += 1;
        self
    }

    #[profiled]
    fn into_inner(self) -> u32 {
        self.n
    }

    #[profiled]
    fn boxed(self: Box<Self>) -> u32 {
        self.n * 10
    }

    #[profiled]
    fn pinned(self: std::pin::Pin<&mut Self>) -> u32 {
        self.n
    }

    #[profiled]
    fn with_lifetime<'a>(&'a self, other: &'a str) -> &'a str {
        if self.n > 0 { other } else { "zero" }
    }

    #[profiled]
    pub fn mut_self_binding(mut self, by: u32) -> Self {
        self.n += by;
        self
    }
}

struct Wrapper<T>(T);

impl<T: Clone + Debug> Wrapper<T>
where
    T: PartialEq,
{
    #[profiled]
    fn get(&self) -> T {
        self.0.clone()
    }

    #[profiled]
    fn same<U>(&self, other: U) -> bool
    where
        U: Into<T>,
    {
        self.0 == other.into()
    }

    #[profiled]
    fn wrap(t: T) -> Self {
        Wrapper(t)
    }
}

trait Shape {
    fn area(&self) -> f64;

    #[profiled]
    fn describe(&self) -> String {
        format!("area {}", self.area())
    }

    fn unit() -> Self
    where
        Self: Sized;
}

struct Square(f64);

impl Shape for Square {
    #[profiled]
    fn area(&self) -> f64 {
        self.0 * self.0
    }

    #[profiled]
    fn unit() -> Self {
        Square(1.0)
    }
}

trait Unsized {
    fn len_of(&self) -> usize;
}

impl Unsized for str {
    #[profiled]
    fn len_of(&self) -> usize {
        self.len()
    }
}

fn main() {
    let mut c = Counter::new();
    assert_eq!(Counter::start_value(), 0);
    c.bump().bump();
    assert_eq!(c.get(), 2);
    assert_eq!(c.with_lifetime("x"), "x");
    assert_eq!(std::pin::pin!(c.clone()).as_mut().pinned(), 2);
    assert_eq!(Box::new(c.clone()).boxed(), 20);
    assert_eq!(c.clone().mut_self_binding(3).get(), 5);
    assert_eq!(c.into_inner(), 2);

    let w = Wrapper::wrap(5u64);
    assert_eq!(w.get(), 5);
    assert!(w.same(5u8));

    assert_eq!(Square(2.0).describe(), "area 4");
    assert_eq!(Square::unit().area(), 1.0);
    assert_eq!("abc".len_of(), 3);
}
