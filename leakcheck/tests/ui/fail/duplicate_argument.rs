#[leakcheck::test(grace = "1s", grace = "2s")]
async fn grace_twice() {}

#[leakcheck::test(flavor = "multi_thread", flavor = "current_thread")]
async fn flavor_twice() {}

#[leakcheck::test(crate = "tokio", crate = "tokio")]
async fn crate_twice() {}

fn main() {}
