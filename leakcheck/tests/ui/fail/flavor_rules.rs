// Which options each flavor takes: tokio's rules and messages.

#[leakcheck::test(worker_threads = 2)]
async fn workers_on_current_thread() {}

#[leakcheck::test(flavor = "local", worker_threads = 2)]
async fn workers_on_local() {}

#[leakcheck::test(flavor = "multi_thread", start_paused = true)]
async fn paused_multi_thread() {}

#[leakcheck::test(flavor = "multi_thread", start_paused = false)]
async fn even_unpaused_multi_thread() {}

#[leakcheck::test(flavor = "multi_thread", unhandled_panic = "ignore")]
async fn unhandled_panic_multi_thread() {}

fn main() {}
