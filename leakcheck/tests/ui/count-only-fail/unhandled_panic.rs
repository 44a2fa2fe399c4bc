// Without `--cfg tokio_unstable` tokio has no `Builder::unhandled_panic`:
// the argument is a compile error that says what to do, at the argument.

#[leakcheck::test(unhandled_panic = "shutdown_runtime")]
async fn shuts_down() {}

#[leakcheck::test(flavor = "local", unhandled_panic = "ignore")]
async fn ignores() {}

fn main() {}
