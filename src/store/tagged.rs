//! The entity tag (ETag) the store gave the upload that WE made: object_store's buffered
//! writer drops the `PutResult` of the PUT or of CompleteMultipartUpload it sends, so the
//! store it writes through is wrapped in one that keeps the answer.
//!
//! Why the answer and not a HEAD after the commit: between the commit and a HEAD another
//! uploader (the platform's own upload) may replace the object, and its tag would then be
//! recorded as ours. The answer to our own request names our object and no other.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// Where the tag of the completed upload lands (`None` until then, and when the store
/// gave none).
pub(crate) type TagSlot = Arc<Mutex<Option<String>>>;

/// `inner`, recording the ETag of every completed put into the returned slot. Meant for
/// ONE upload (one [`object_store::buffered::BufWriter`]).
pub(crate) fn recording(inner: Arc<dyn ObjectStore>) -> (Arc<dyn ObjectStore>, TagSlot) {
    let slot = TagSlot::default();
    (
        Arc::new(Recording {
            inner,
            slot: slot.clone(),
        }),
        slot,
    )
}

fn keep(slot: &TagSlot, r: &PutResult) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = r.e_tag.clone();
}

#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ObjectStore>,
    slot: TagSlot,
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        keep(&self.slot, &r);
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(RecordingUpload {
            upload,
            slot: self.slot.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct RecordingUpload {
    upload: Box<dyn MultipartUpload>,
    slot: TagSlot,
}

#[async_trait]
impl MultipartUpload for RecordingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let r = self.upload.complete().await?;
        keep(&self.slot, &r);
        Ok(r)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.upload.abort().await
    }
}
