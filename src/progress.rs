//! How long operations report how far they are. The library only calls these traits; the
//! binary draws bars on a terminal and nothing otherwise.

pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes (0 if unknown) starts.
    fn begin(&self, what: &str, total: u64);
    fn advance(&self, bytes: u64);
    fn end(&self);
    /// The work moved on to another step (`downloading`, `checking`, `installed`…); for
    /// a reporter of one item among several.
    fn stage(&self, _what: &str) {}
}

/// Progress of several items side by side (the connectors of a hub): one reporter each.
pub trait ProgressSet: Send + Sync {
    /// The reporter of the item called `label`.
    fn item(&self, label: &str) -> Box<dyn Progress>;
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

impl ProgressSet for NoProgress {
    fn item(&self, _: &str) -> Box<dyn Progress> {
        Box::new(NoProgress)
    }
}
