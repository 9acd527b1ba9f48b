//! What the bucket holds, read back: every connector in a scope from one paged listing
//! ([`inventory`]), a connector's kept versions and the pointer to its latest backup
//! ([`history`]), which versions a retention policy keeps ([`retention`]), the stream's
//! restore planning ([`stream`]), and the instants a connector can be restored to
//! ([`window`]).
//!
//! Shared by the operations: `status`, `prune` and `verify` all read the inventory, and
//! `restore`, `verify` and `versions` all ask which manifest vouches for a backup.

pub mod fetch;
pub mod history;
pub mod inventory;
pub mod retention;
pub mod stream;
pub mod window;
