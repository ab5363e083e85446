//! Native `async fn` in traits: default bodies and implementations.
#![deny(warnings)]
#![allow(async_fn_in_trait)]

use profiling_core::profiled;

trait Store {
    async fn get(&self, key: u32) -> Option<String>;

    #[profiled]
    async fn get_or_default(&self, key: u32) -> String {
        self.get(key).await.unwrap_or_default()
    }

    async fn create() -> Self
    where
        Self: Sized;
}

struct Memory(Vec<String>);

impl Store for Memory {
    #[profiled]
    async fn get(&self, key: u32) -> Option<String> {
        tokio::task::yield_now().await;
        let value = self.0.get(key as usize)?;
        Some(value.clone())
    }

    #[profiled]
    async fn create() -> Self {
        Memory(vec!["zero".to_owned()])
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let store = Memory::create().await;
        assert_eq!(store.get(0).await.as_deref(), Some("zero"));
        assert_eq!(store.get_or_default(1).await, "");
    });
}
