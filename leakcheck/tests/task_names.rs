//! Task names from `tokio::task::Builder::name`, through the `TaskNames`
//! layer (tokio's hooks do not pass names; its tracing spans do).

#![cfg(all(tokio_unstable, feature = "task-names"))]

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;

#[test]
fn a_named_task_shows_its_name_in_the_report_and_json() {
    let subscriber = tracing_subscriber::registry().with(leakcheck::TaskNames);
    let _default = tracing::subscriber::set_default(subscriber);
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    let report = builder.build().unwrap().block_on(async {
        let guard = leakcheck::verify_none().grace(Duration::from_millis(20));
        tokio::task::Builder::new()
            .name("heartbeat")
            .spawn(std::future::pending::<()>())
            .unwrap();
        tokio::spawn(std::future::pending::<()>());
        guard.verify().await.unwrap_err()
    });
    let mut names: Vec<Option<&str>> = report
        .sites
        .iter()
        .flat_map(|group| &group.tasks)
        .map(|task| task.name.as_deref())
        .collect();
    names.sort();
    assert_eq!(names, [None, Some("heartbeat")], "{report}");
    assert!(
        report.to_string().contains(" \"heartbeat\" · age "),
        "{report}"
    );
    assert!(report.to_json().contains("\"name\": \"heartbeat\""));
}
