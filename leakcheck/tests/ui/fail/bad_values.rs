#[leakcheck::test(grace = "soon")]
async fn bad_grace() {}

#[leakcheck::test(mode = "loud")]
async fn bad_mode() {}

#[leakcheck::test(flavor = "threaded")]
async fn bad_flavor() {}

#[leakcheck::test(flavor = "single_thread")]
async fn old_flavor_name() {}

#[leakcheck::test(unhandled_panic = "abort")]
async fn bad_unhandled_panic() {}

#[leakcheck::test(flavor = "multi_thread", worker_threads = 0)]
async fn no_workers() {}

#[leakcheck::test(name = " ")]
async fn empty_name() {}

#[leakcheck::test(ignore = "")]
async fn empty_ignore() {}

#[leakcheck::test(crate = "not a path")]
async fn bad_tokio_path() {}

#[leakcheck::test(leakcheck_crate = "::")]
async fn bad_leakcheck_path() {}

fn main() {}
