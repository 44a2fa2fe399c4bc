#[leakcheck::test(flavor = "multi_thread", worker_threads = 2, grace = "10ms", ignore = "a.rs", ignore = "b.rs:3", mode = "warn", crate = "::leakcheck")]
async fn multi() {}

#[leakcheck::test(start_paused = true, grace = "1.5s")]
async fn paused() {}

#[leakcheck::test]
async fn returns_result() -> Result<(), std::io::Error> {
    let _ = std::fs::metadata(".")?;
    Ok(())
}

#[leakcheck::test]
#[should_panic(expected = "boom")]
async fn keeps_other_attributes() {
    panic!("boom");
}

fn main() {}
