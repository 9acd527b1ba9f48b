//! Databases on this machine and the files around them: opening a connector database and
//! reading what it says ([`db`]), a consistent copy of a live one ([`snapshot`]), the id
//! rewrite ([`rewrite`], with the id spellings it knows in [`spelling`], its SQL functions
//! in [`idfn`], the same rewrite done on a private file's pages in [`pagerewrite`], virtual tables in [`vtab`], and stored SQL read without running it in
//! [`sqltext`]), one operation per connector at a time ([`lock`]), durable
//! file operations (temp file, fsync, rename, fsync of the directory, ownership) in one
//! place ([`fsio`]), and what a restore does in the target directory ([`install`]; for new
//! connectors of a whole-hub restore, [`hubstage`]).

pub mod db;
pub mod fsio;
pub mod hubstage;
pub mod idfn;
pub mod install;
pub mod lock;
pub mod pagerewrite;
pub mod pages;
pub mod rewrite;
pub mod safedir;
pub mod snapshot;
pub mod spelling;
pub mod spill;
pub mod sqltext;
pub mod stats;
#[cfg(test)]
pub(crate) mod testdb;
pub mod twin;
pub mod vtab;
