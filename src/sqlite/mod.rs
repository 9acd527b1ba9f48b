//! Databases on this machine and the files around them: opening a connector database and
//! reading what it says ([`db`]), a consistent copy of a live one ([`snapshot`]), the id
//! rewrite ([`rewrite`]), one operation per connector at a time ([`lock`]), and durable
//! file operations (temp file, fsync, rename, fsync of the directory, ownership) in one
//! place ([`fsio`]).

pub mod db;
pub mod fsio;
pub mod hubstage;
pub mod install;
pub mod lock;
pub mod pages;
pub mod rewrite;
pub mod safedir;
pub mod snapshot;
