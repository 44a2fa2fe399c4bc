//! `leakcheck flamegraph`.

use crate::support::{Scratch, fixtures, run, run_in};

#[test]
fn writes_an_svg_of_every_backtrace_and_nothing_else() {
    let scratch = Scratch::new("flamegraph-svg");
    let output = scratch.join("leaks.svg");
    let run = run(&["flamegraph", "reports", "-o", &output]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        format!("leakcheck: wrote {output} (8 tasks in 6 backtraces)\n")
    );
    let svg = std::fs::read_to_string(&output).expect("svg written");
    assert!(svg.contains("<svg"), "not an SVG");
    assert!(svg.trim_end().ends_with("</svg>"), "SVG not closed");
    for frame in [
        "Leaked tasks by spawn backtrace",
        "server::pool::Pool::spawn_reaper",
        "server::conn::accept_loop",
        "spawn site unknown",
        "8 tasks from 3 inputs",
    ] {
        assert!(svg.contains(frame), "{frame:?} missing from the SVG");
    }
    // The temporary file was renamed, not left behind.
    assert_eq!(scratch.files(), ["leaks.svg"]);
}

#[test]
fn snapshots_draw_too_and_dash_means_stdout() {
    let run = run(&[
        "flamegraph",
        "snapshots/after.json",
        "-o",
        "-",
        "--title",
        "Live tasks",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("Live tasks"));
    assert!(run.stdout.contains("server::upstream::Client::send"));
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn no_leaks_still_gives_a_valid_svg_that_says_so() {
    let run = run(&["flamegraph", "clean", "-o", "-"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("<svg"));
    assert!(run.stdout.contains("No leaked tasks in 1 input"));
}

#[test]
fn an_output_directory_that_does_not_exist_is_a_run_error() {
    let scratch = Scratch::new("flamegraph-missing-dir");
    let output = scratch.join("missing/leaks.svg");
    let run = run_in(&fixtures(), &["flamegraph", "reports", "-o", &output]);
    run.assert_one_line_error(3, &[&output, "cannot write output", "does not exist"]);
    assert!(scratch.files().is_empty());
}
