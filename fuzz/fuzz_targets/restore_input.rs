//! The restore planner's input: a downloaded database with arbitrary schema, encodings
//! and values, built from the fuzzer's bytes, then rewritten onto new ids. The rewrite
//! never panics, and is either exact (every rewritable spelling of an old id replaced,
//! every other byte kept; what it cannot rewrite refused unless accepted, then listed)
//! or refused with the database unchanged: never a silent partial rewrite. The generator
//! and the property are `tests/it/hostile_db.rs`, which the proptest
//! `props::the_rewrite_of_a_hostile_database_is_exact_or_refused_never_partial` runs in CI.
#![no_main]

#[path = "../../src/cli/fixture.rs"]
#[allow(dead_code)]
mod fixture;
#[path = "../../tests/it/hostile_db.rs"]
mod hostile_db;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let case = hostile_db::build(bytes);
    hostile_db::check(&case);
});
