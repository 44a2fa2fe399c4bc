// Every argument `#[tokio::test]` takes, with the same spelling, beside
// leakcheck's own.

#[leakcheck::test(flavor = "multi_thread", worker_threads = 2, name = "pool", grace = "10ms", ignore = "a.rs", ignore = "b.rs:3", mode = "warn")]
async fn multi() {}

#[leakcheck::test(flavor = "current_thread", start_paused = true, grace = "1.5s", mode = "fail")]
async fn paused() {}

#[leakcheck::test(flavor = "local", start_paused = false)]
async fn local() {}

// `crate` is the path to tokio, `leakcheck_crate` the path to leakcheck.
#[leakcheck::test(crate = "::tokio", leakcheck_crate = "::leakcheck")]
async fn paths() {}

// tokio-macros lowercases argument names.
#[leakcheck::test(Flavor = "multi_thread", Worker_Threads = 1)]
async fn case_insensitive_names() {}

#[leakcheck::test(grace = "0")]
async fn returns_result() -> Result<(), std::io::Error> {
    let _ = std::fs::metadata(".")?;
    Ok(())
}

#[leakcheck::test]
#[should_panic(expected = "boom")]
async fn keeps_other_attributes() {
    panic!("boom");
}

#[leakcheck::test]
async fn lifts_inner_attributes() {
    #![allow(unused_variables)]
    let unused = 1;
}

fn main() {}
