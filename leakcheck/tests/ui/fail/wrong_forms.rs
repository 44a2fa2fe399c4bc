const GRACE: &str = "1s";

#[leakcheck::test(flavor = "multi_thread", worker_threads = "2")]
async fn workers_as_string() {}

#[leakcheck::test(start_paused = 1)]
async fn paused_as_int() {}

#[leakcheck::test(grace = 250)]
async fn grace_as_int() {}

#[leakcheck::test(grace = GRACE)]
async fn grace_not_a_literal() {}

#[leakcheck::test(multi_thread)]
async fn flavor_as_word() {}

#[leakcheck::test(flavor)]
async fn argument_without_value() {}

#[leakcheck::test(core_threads = 2)]
async fn old_argument_name() {}

#[leakcheck::test(ignore("a.rs"))]
async fn list_form() {}

fn main() {}
