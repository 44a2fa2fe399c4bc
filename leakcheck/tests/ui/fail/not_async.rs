#[leakcheck::test]
fn t() {}

#[leakcheck::test]
#[test]
async fn twice() {}

fn main() {}
