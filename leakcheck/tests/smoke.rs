use std::time::Duration;

#[leakcheck::test]
async fn clean() {
    tokio::spawn(async {}).await.unwrap();
}

#[leakcheck::test(grace = "50ms")]
#[should_panic(expected = "1 leaked task")]
async fn leaky() {
    tokio::spawn(async { tokio::time::sleep(Duration::from_secs(60)).await });
}
