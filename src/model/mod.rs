//! What hubvault names and stores, with no I/O beyond (de)serialising: ids, the bucket's
//! key layout and its inverse, and every record format written beside a backup.
//!
//! Everything above reads and writes these formats through this module only, so a reader
//! of a format never has to import the operation that happens to write it.

pub mod drill;
pub mod ids;
pub mod layout;
pub mod manifest;
pub mod source;
pub mod stream;
pub mod time;
