//! Draws `docs/bench-udp-batch.svg`, UDP echo datagrams per server CPU
//! second by `--udp-batch`, from the batch-size table of
//! `docs/benchmarks.md` ("UDP: batched receive and send"). Measures
//! nothing: the table's figures come from UDP runs of `cargo bench --bench
//! compare` (the commands are beside it).
//!
//! `cargo bench --bench udp_plot`

mod support;

use std::path::Path;

use support::{Series, line_chart};

fn main() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let text = std::fs::read_to_string(docs.join("benchmarks.md")).expect("docs/benchmarks.md");
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with("| `--udp-batch` |"));
    let header = lines.next().expect("the batch-size table");
    let x: Vec<f64> = cells(header)[1..]
        .iter()
        .map(|c| c.parse().expect("a batch size"))
        .collect();
    let series: Vec<Series> = lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let row = cells(l);
            Series {
                name: row[0].replace('`', ""),
                values: row[1..]
                    .iter()
                    .map(|c| c.replace(',', "").parse().unwrap_or(f64::NAN))
                    .collect(),
            }
        })
        .collect();
    let out = docs.join("bench-udp-batch.svg");
    line_chart(
        &out,
        "UDP echo, 10 clients x 16 x 64 B: datagrams per server CPU second",
        "--udp-batch",
        "datagrams per CPU s",
        &x,
        &series,
    );
    println!("wrote {}", out.display());
}
