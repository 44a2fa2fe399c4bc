//! Small text helpers shared by the table outputs: counts, ages, aligned
//! columns. Hand-written: four columns of plain text need no table crate.

/// `1 task`, `3 tasks`.
pub fn count(n: usize, singular: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {singular}s")
    }
}

/// A task age for people: `310 ms`, `4.2 s`, `12 min 5 s`.
pub fn age(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{}.{} s", ms / 1_000, ms % 1_000 / 100),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1_000),
    }
}

/// How a table column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// Renders rows under a header, each column as wide as its widest cell,
/// indented by two spaces; the last column is never padded.
pub fn table(header: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header
        .iter()
        .map(|(title, _)| title.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let titles: Vec<String> = header
        .iter()
        .map(|(title, _)| (*title).to_owned())
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&titles).chain(rows) {
        out.push(' ');
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            out.push(' ');
            let last = i + 1 == row.len();
            match header[i].1 {
                Align::Right => {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(cell);
                }
                Align::Left if last => out.push_str(cell),
                Align::Left => {
                    out.push_str(cell);
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_pick_a_readable_unit() {
        assert_eq!(age(310), "310 ms");
        assert_eq!(age(4_250), "4.2 s");
        assert_eq!(age(725_000), "12 min 5 s");
    }

    #[test]
    fn table_aligns_numbers_right_and_text_left() {
        let rows = vec![
            vec!["5".to_owned(), "a.rs:1:1".to_owned()],
            vec!["12".to_owned(), "b.rs:2:2".to_owned()],
        ];
        let out = table(&[("TASKS", Align::Right), ("SITE", Align::Left)], &rows);
        assert_eq!(out, "  TASKS SITE\n      5 a.rs:1:1\n     12 b.rs:2:2\n");
    }
}
