//! Builds a connector database for benchmarks: `make_fixture OUT.db EVENTS [TYPE [DATAHUB]]`
//! (DATAHUB: put it on that hub, so several connectors make one hub). Prints the datahub
//! and connector ids.

#[path = "../src/cli/fixture.rs"]
mod fixture;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: make_fixture OUT.db EVENTS [hrb-cellario|sdc|idbs-eworkbook|solace [DATAHUB]]"
        );
        std::process::exit(2);
    }
    let events: usize = args[2].parse().expect("EVENTS is a number");
    let source_type = args.get(3).map(String::as_str).unwrap_or("hrb-cellario");
    let name = fixture::CONNECTOR_TYPES
        .iter()
        .find(|(t, _)| *t == source_type)
        .map(|(_, n)| *n)
        .unwrap_or("Benchmark source");
    let mut spec = fixture::Spec::new(source_type, name, events);
    if let Some(hub) = args.get(4) {
        spec.datahub = hubvault::model::ids::DatahubId::parse(hub).expect("DATAHUB is a UUID");
    }
    if let Err(e) = fixture::create(std::path::Path::new(&args[1]), &spec) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    println!("{} {}", spec.datahub, spec.connector);
}
