//! `Tracker::live_by_site`: the live tasks counted per spawn site, most first,
//! the same counts a snapshot groups.

#![cfg(tokio_unstable)]

#[test]
fn live_tasks_are_counted_per_spawn_site_most_first() {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    builder.build().unwrap().block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(());
        let park = || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.changed().await;
            }
        };
        // Each spawn is on the line after its `line!()`.
        let one_line = line!() + 1;
        let one = tokio::spawn(park());
        let three_line = line!() + 1;
        let three: Vec<_> = (0..3).map(|_| tokio::spawn(park())).collect();
        let sites = tracker.live_by_site();
        let counts: Vec<(u32, usize)> = sites.iter().map(|(site, n)| (site.line, *n)).collect();
        assert_eq!(counts, [(three_line, 3), (one_line, 1)], "{sites:?}");
        assert!(
            sites
                .iter()
                .all(|(site, _)| site.file == "leakcheck/tests/live_by_site.rs")
        );
        let snapshot = tracker.snapshot();
        let mut grouped: Vec<(u32, usize)> = snapshot
            .sites
            .iter()
            .map(|g| (g.site.line, g.count))
            .collect();
        grouped.sort_by_key(|g| std::cmp::Reverse(g.1));
        assert_eq!(grouped, counts, "the snapshot groups the same counts");
        stop.send(()).unwrap();
        one.await.unwrap();
        for task in three {
            task.await.unwrap();
        }
        assert!(tracker.live_by_site().is_empty());
    });
}
