//! Builds a realistic connector database for benchmarks (bench/remap.sh):
//! `cargo run --release --example make_fixture -- OUT.db EVENTS [TYPE]`.
//! Prints the datahub and connector ids, one per line.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(out), Some(events)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!("usage: make_fixture OUT.db EVENTS [TYPE]");
        std::process::exit(2);
    };
    let t = args.get(3).map(String::as_str).unwrap_or("hrb-cellario");
    let spec = hubvault::fixture::Spec::new(t, "Benchmark source", events);
    if let Err(e) = hubvault::fixture::create(std::path::Path::new(out), &spec) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    println!("{}\n{}", spec.datahub, spec.connector);
}
