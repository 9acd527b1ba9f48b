//! An object written by a producer of bytes of unknown length (a stream object encoded
//! on the fly from a file): staged and committed as [`Bucket::stage_with`] does, so
//! memory stays a few parts whatever the object's size, and the object appears whole or
//! not at all.

use object_store::path::Path;

use crate::error::{Error, Result};
use crate::store::bucket::Bucket;
use crate::store::codec::{Encoding, Landed};
use crate::store::staged::Feed;

/// A [`Feed`] as an `io::Write`, for encoders that write into any writer.
struct FeedWriter<'a>(&'a mut Feed);

impl std::io::Write for FeedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .write(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Bucket {
    /// Writes what `source` writes (on a blocking thread) to `key`, stored as written.
    /// `total` is about the object's size (it picks a local directory's large-object
    /// path; 0 when unknown). Overwrites: the callers' keys name their content. A commit
    /// whose last answer was lost is checked against the sha256 of the bytes written.
    /// Returns what `source` returned and the bytes stored.
    pub async fn put_streamed<T: Send + 'static>(
        &self,
        key: &Path,
        total: u64,
        source: impl FnOnce(&mut dyn std::io::Write) -> Result<T> + Send + 'static,
    ) -> Result<(T, u64)> {
        let (t, sent, mut staged) = self
            .stage_with(
                &[(key.clone(), Encoding::Plain)],
                total,
                true,
                Landed::Sha256(String::new()),
                &crate::progress::NoProgress,
                move |feed| source(&mut FeedWriter(feed)),
            )
            .await?;
        let upload = staged.pop().ok_or_else(|| {
            Error::check("a staged upload without its target", "report this as a bug")
        })?;
        upload.commit().await?;
        Ok((t, sent.plain_bytes))
    }
}
