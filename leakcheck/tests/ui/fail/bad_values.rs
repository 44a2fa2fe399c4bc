#[leakcheck::test(grace = "soon")]
async fn bad_grace() {}

#[leakcheck::test(mode = "loud")]
async fn bad_mode() {}

#[leakcheck::test(flavor = "threaded")]
async fn bad_flavor() {}

#[leakcheck::test(worker_threads = 2)]
async fn workers_without_multi_thread() {}

fn main() {}
