#[leakcheck::test(timeout = "1s")]
async fn t() {}

fn main() {}
