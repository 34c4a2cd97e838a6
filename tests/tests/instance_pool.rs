//! The instance pool on its own: it never lets more than its size of a
//! plugin's instances exist, a caller waits for one to come back rather
//! than failing, and an instance thrown away (after a trap) frees its place.

use std::sync::Arc;
use std::time::Duration;

use wsgate::config::Limits;
use wsgate::registry::Registry;
use wsgate::runtime::{InstancePool, PluginEnv, Runtime, content_hash};
use wsgate_tests::example_plugins;

fn pool(size: usize) -> InstancePool {
    let limits = Limits::default();
    let runtime = Runtime::new(limits.instance_memory, None).unwrap();
    let bytes = std::fs::read(example_plugins().join("echo.wasm")).unwrap();
    let compiled = runtime.compile(&bytes, content_hash(&bytes)).unwrap();
    let pre = runtime.prepare(&compiled).unwrap();
    let env = Arc::new(PluginEnv::new("echo", &Registry::new(), limits));
    InstancePool::new(pre, env, size, Duration::from_secs(5))
}

const A_WHILE: Duration = Duration::from_millis(200);

#[tokio::test]
async fn a_full_pool_makes_callers_wait_for_an_instance() {
    let pool = pool(2);
    let first = pool.borrow().await.unwrap();
    let second = pool.borrow().await.unwrap();
    let mut third = std::pin::pin!(pool.borrow());
    assert!(
        tokio::time::timeout(A_WHILE, third.as_mut()).await.is_err(),
        "a third instance must not exist while two are on loan"
    );
    pool.give_back(first);
    let third = tokio::time::timeout(A_WHILE, third).await;
    assert!(
        third.is_ok(),
        "a given-back instance goes to the waiting caller"
    );
    drop(second);
}

#[tokio::test]
async fn a_thrown_away_instance_frees_its_place() {
    let pool = pool(1);
    let loan = pool.borrow().await.unwrap();
    let mut next = std::pin::pin!(pool.borrow());
    assert!(tokio::time::timeout(A_WHILE, next.as_mut()).await.is_err());
    // What the listener does with an instance that trapped.
    drop(loan);
    let next = tokio::time::timeout(A_WHILE, next).await;
    assert!(next.is_ok(), "a new instance replaces the dropped one");
}
