//! The shape `#[async_trait]` expands to, written by hand: a non-async method whose
//! body ends in `Box::pin(async move { .. })`. The inner future is instrumented and the
//! boxed future stays `Send`.
#![deny(warnings)]

use profiling_core::profiled;
use std::future::Future;
use std::pin::Pin;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

trait Repo {
    fn load<'life0, 'async_trait>(&'life0 self, id: u32) -> BoxFuture<'async_trait, Option<u32>>
    where
        'life0: 'async_trait,
        Self: 'async_trait;

    fn count() -> BoxFuture<'static, usize>;
}

struct Db(Vec<u32>);

impl Repo for Db {
    #[profiled]
    fn load<'life0, 'async_trait>(&'life0 self, id: u32) -> BoxFuture<'async_trait, Option<u32>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if let Some(__ret) = None::<Option<u32>> {
                #[allow(unreachable_code)]
                return __ret;
            }
            let __self = self;
            let id = id;
            let __ret: Option<u32> = {
                tokio::task::yield_now().await;
                let v = __self.0.get(id as usize)?;
                Some(*v * 2)
            };
            #[allow(unreachable_code)]
            __ret
        })
    }

    // No receiver, statements before `Box::pin`, a fully qualified `Box::pin`.
    #[profiled(span)]
    fn count() -> BoxFuture<'static, usize> {
        let n = 3;
        ::std::boxed::Box::pin(async move {
            tokio::task::yield_now().await;
            n
        })
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let db = Db(vec![1, 2]);
        assert_eq!(db.load(1).await, Some(4));
        assert_eq!(db.load(5).await, None);
        assert_eq!(Db::count().await, 3);
        let spawned = tokio::spawn(async { Db(vec![7]).load(0).await });
        assert_eq!(spawned.await.unwrap(), Some(14));
    });
}
