#[leakcheck::test(grace = "1s", grace = "2s")]
async fn t() {}

fn main() {}
