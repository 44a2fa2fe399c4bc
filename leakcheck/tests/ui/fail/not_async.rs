#[leakcheck::test]
fn t() {}

#[leakcheck::test]
#[test]
async fn twice() {}

// `#[test_log::test]` adds its own `#[test]` unless it is told which test
// attribute to use: write `#[test_log::test(leakcheck::test)]` instead.
#[test_log::test]
#[leakcheck::test]
async fn wrapper_without_inner_attribute() {}

fn main() {}
