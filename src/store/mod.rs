//! The bucket: one narrow type over a local directory or S3 ([`bucket::Bucket`]), the
//! codecs objects are stored with, and uploads that become visible only when committed.

pub mod bucket;
mod codec;
mod local;
pub use local::StagingLeft;
pub mod s3;
pub mod staged;
mod streamed;
mod tagged;
pub mod url;

pub use bucket::{Bucket, ObjectInfo, Transfer, WriteMode};
pub use codec::{Encoding, encoder_to};
