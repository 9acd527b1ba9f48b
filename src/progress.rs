//! How long operations report how far they are. The library only calls this trait; the
//! binary draws a bar on a terminal and nothing otherwise.

pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes (0 if unknown) starts.
    fn begin(&self, what: &str, total: u64);
    fn advance(&self, bytes: u64);
    fn end(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}
