//! `async fn`: free, in impls, generic, with `?`, early return, references and
//! `impl Trait` returns. The futures stay `Send` when their body is.
#![deny(warnings)]

use profiling_core::profiled;
use std::fmt::Display;
use std::future::Future;
use std::num::ParseIntError;
use std::time::Duration;

fn assert_send<F: Future + Send>(f: F) -> F {
    f
}

#[profiled]
async fn unit() {}

#[profiled]
async fn sleepy(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    tokio::task::yield_now().await;
    ms
}

#[profiled]
async fn question_mark(a: &str) -> Result<u32, ParseIntError> {
    let a: u32 = a.parse()?;
    sleepy(1).await;
    Ok(a)
}

#[derive(Debug)]
struct MyError;

impl From<ParseIntError> for MyError {
    fn from(_: ParseIntError) -> Self {
        MyError
    }
}

// The fake return edge keeps `?` converting into the declared error type.
#[profiled]
async fn question_mark_converts(a: String) -> Result<u8, MyError> {
    Ok(a.parse::<u8>()?)
}

// `Box<dyn Error>`: `?` needs the declared return type to infer the conversion.
#[profiled]
async fn boxed_error(a: &str) -> Result<u8, Box<dyn std::error::Error + Send + Sync>> {
    let n: u8 = a.parse()?;
    if n == 0 {
        return Err("zero".into());
    }
    Ok(n)
}

#[profiled]
async fn early_return(x: i32) -> &'static str {
    if x < 0 {
        return "negative";
    }
    sleepy(0).await;
    "positive"
}

#[profiled]
async fn borrows<'a>(s: &'a str, _other: &str) -> &'a str {
    tokio::task::yield_now().await;
    &s[1..]
}

#[profiled]
async fn generic<T>(t: T) -> Vec<T>
where
    T: Clone + Send,
{
    tokio::task::yield_now().await;
    vec![t.clone(), t]
}

#[profiled]
async fn returns_impl_trait() -> impl Display {
    sleepy(0).await;
    7
}

#[profiled]
async fn destructures((a, b): (u8, u8), mut v: Vec<u8>) -> Vec<u8> {
    v.push(a + b);
    v
}

struct Service {
    calls: u32,
}

impl Service {
    #[profiled]
    async fn call(&self, x: u32) -> u32 {
        sleepy(0).await;
        self.calls + x
    }

    #[profiled]
    async fn call_mut(&mut self) -> &mut Self {
        self.calls += 1;
        self
    }

    #[profiled]
    async fn consume(self: Box<Self>) -> u32 {
        self.calls
    }

    #[profiled]
    async fn make() -> Self {
        Service { calls: 0 }
    }
}

#[profiled]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    unit().await;
    assert_eq!(assert_send(sleepy(1)).await, 1);
    assert_eq!(assert_send(question_mark("4")).await, Ok(4));
    assert!(question_mark("x").await.is_err());
    assert!(question_mark_converts("300".into()).await.is_err());
    assert_eq!(boxed_error("3").await.unwrap(), 3);
    assert!(boxed_error("0").await.is_err());
    assert_eq!(early_return(-1).await, "negative");
    assert_eq!(early_return(1).await, "positive");
    assert_eq!(borrows("abc", "d").await, "bc");
    assert_eq!(assert_send(generic(1u8)).await, [1, 1]);
    assert_eq!(returns_impl_trait().await.to_string(), "7");
    assert_eq!(destructures((1, 2), vec![0]).await, [0, 3]);

    let mut service = Service::make().await;
    service.call_mut().await.call_mut().await;
    assert_eq!(assert_send(service.call(1)).await, 3);
    assert_eq!(Box::new(service).consume().await, 2);

    // `tokio::spawn` needs `Send + 'static`: the instrumented futures are both.
    let handle = tokio::spawn(async { sleepy(1).await + question_mark("1").await.unwrap() as u64 });
    assert_eq!(handle.await.unwrap(), 2);
}
