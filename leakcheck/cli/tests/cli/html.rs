//! `leakcheck html`, including a render check in headless Chromium.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Scratch, run};

/// Set (as CI does) to make a missing browser fail the render test instead of skipping it.
const REQUIRE_CHROMIUM: &str = "LEAKCHECK_REQUIRE_CHROMIUM";

/// Longest a headless Chromium render may take.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn the_page_holds_table_flame_graph_and_reports_with_everything_escaped() {
    let scratch = Scratch::new("html-page");
    let output = scratch.join("leaks.html");
    let run = run(&["html", "reports", "hostile", "-o", &output]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let page = std::fs::read_to_string(&output).expect("page written");
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<table id=\"summary\">"));
    assert_eq!(
        page.matches("<tr><td class=\"n\">").count(),
        4,
        "3 sites and the unknown one"
    );
    assert!(
        page.contains("<div id=\"flamegraph\">\n<svg"),
        "the SVG is inline, without its XML prolog"
    );
    assert_eq!(page.matches("<details class=\"report\">").count(), 4);
    // Names from the reports are text, never markup.
    assert!(!page.contains("<script>alert"));
    assert!(page.contains("tests::&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"));
    assert!(page.contains("src/&lt;b&gt;evil&lt;/b&gt;.rs:1:1"));
    assert!(!page.contains("<b>evil"));
    // Self-contained: nothing is loaded from elsewhere.
    for external in ["<link", "src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!page.contains(external), "{external:?} found");
    }
    assert_eq!(scratch.files(), ["leaks.html"]);
}

#[test]
fn snapshots_are_not_reports() {
    run(&["html", "snapshots", "-o", "-"]).assert_one_line_error(
        2,
        &[
            "snapshots/after.json",
            "is a snapshot, but `leakcheck html` reads leak reports",
        ],
    );
}

#[test]
fn the_page_renders_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| on_path(b))
    else {
        assert!(
            std::env::var_os(REQUIRE_CHROMIUM).is_none(),
            "{REQUIRE_CHROMIUM} is set but no chromium, chromium-browser or google-chrome is on PATH"
        );
        eprintln!(
            "SKIPPED: no chromium on PATH (apt-get install -y chromium); the HTML render check did not run"
        );
        return;
    };
    let scratch = Scratch::new("html-chromium");
    let output = scratch.join("leaks.html");
    let run = run(&["html", "reports", "-o", &output]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let profile = scratch.join("profile");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={profile}"),
            "--dump-dom",
            &format!("file://{output}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    while child.try_wait().expect("poll chromium").is_none() {
        if started.elapsed() > CHROMIUM_TIMEOUT {
            let _ = child.kill();
            panic!("chromium did not render the page within {CHROMIUM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let dom = child.wait_with_output().expect("chromium output").stdout;
    let dom = String::from_utf8_lossy(&dom);
    assert!(
        dom.contains("<table id=\"summary\">"),
        "no summary table in the rendered DOM:\n{dom}"
    );
    assert!(dom.contains("server/src/pool.rs:41:9"));
    assert!(dom.contains("<svg"), "no SVG in the rendered DOM");
    // The browser parsed the SVG as SVG: its frames became elements.
    assert!(
        dom.contains("<title>server::pool::Pool::spawn_reaper"),
        "flame graph frames missing from the DOM"
    );
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join(binary).is_file())
    })
}
