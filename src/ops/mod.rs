//! The operations, one module each. An operation calls the layers below; it never
//! imports another operation (what two share lives in [`crate::catalog`] or below).

pub mod backup;
pub mod doctor;
pub mod inspect;
pub mod prune;
pub mod remap;
pub mod restore;
pub mod restore_hub;
pub mod status;
pub mod verify;
pub mod versions;
