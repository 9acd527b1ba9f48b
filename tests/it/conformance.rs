//! One conformance suite for the bucket: every claim runs on the local directory and on
//! the S3 server (object_store's integration.rs does the same for its backends).

use std::io::Write;

use hubvault::progress::NoProgress;
use hubvault::store::{Encoding, WriteMode};
use object_store::path::Path;

use crate::both;
use crate::common::{TestBucket, rt};

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn head_of_missing_key_is_none(tb: &TestBucket) {
    let b = tb.bucket();
    rt().block_on(async {
        assert_eq!(
            b.head(&Path::from("acme/none/sqlite.db")).await.unwrap(),
            None
        );
        let err = b
            .get_bytes(&Path::from("acme/none/sqlite.db"))
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("acme/none/sqlite.db"), "{err}");
    });
}
both!(
    head_of_a_missing_key_is_none_and_get_names_the_key,
    head_of_missing_key_is_none
);

fn put_file_round_trips_plain_and_zstd(tb: &TestBucket) {
    let b = tb.bucket();
    // Over one part, so the S3 leg does a real multipart upload.
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
        .collect();
    let src = file_with(&data);
    rt().block_on(async {
        for (key, enc) in [
            ("a/plain.db", Encoding::Plain),
            ("a/packed.db.zst", Encoding::Zstd(3)),
        ] {
            let key = Path::from(key);
            let up = b
                .put_file(&key, src.path(), enc, &NoProgress)
                .await
                .unwrap();
            assert_eq!(up.sha256, sha(&data));
            assert_eq!(up.plain_bytes, data.len() as u64);
            let head = b.head(&key).await.unwrap().unwrap();
            assert_eq!(head.size, up.stored_bytes);
            if enc == Encoding::Plain {
                assert_eq!(head.size, data.len() as u64);
            } else {
                assert!(
                    head.size < data.len() as u64 / 2,
                    "zstd should shrink this: {}",
                    head.size
                );
            }
            let dest = tempfile::NamedTempFile::new().unwrap();
            let down = b
                .get_to_file(&key, dest.path(), enc, &NoProgress)
                .await
                .unwrap();
            assert_eq!(down.sha256, up.sha256);
            assert_eq!(std::fs::read(dest.path()).unwrap(), data);
        }
    });
}
both!(
    put_file_and_get_to_file_round_trip_plain_and_zstd,
    put_file_round_trips_plain_and_zstd
);

fn create_mode_never_replaces(tb: &TestBucket) {
    let b = tb.bucket();
    rt().block_on(async {
        let key = Path::from("a/manifest.json");
        assert!(
            b.put_bytes(&key, b"first".to_vec(), WriteMode::Create)
                .await
                .unwrap()
        );
        assert!(
            !b.put_bytes(&key, b"second".to_vec(), WriteMode::Create)
                .await
                .unwrap()
        );
        assert_eq!(&b.get_bytes(&key).await.unwrap()[..], b"first");
        assert!(
            b.put_bytes(&key, b"third".to_vec(), WriteMode::Overwrite)
                .await
                .unwrap()
        );
        assert_eq!(&b.get_bytes(&key).await.unwrap()[..], b"third");
    });
}
both!(
    create_mode_never_replaces_an_existing_object,
    create_mode_never_replaces
);

fn list_sees_everything_under_a_prefix(tb: &TestBucket) {
    let b = tb.bucket();
    rt().block_on(async {
        // More than one page of a ListObjectsV2 (1000 keys) would be slow on moto; the
        // paging itself is exercised by the status tests. Here: prefix isolation.
        for i in 0..30 {
            b.put_bytes(
                &Path::from(format!("p/x/{i:03}")),
                vec![1u8; i],
                WriteMode::Overwrite,
            )
            .await
            .unwrap();
        }
        b.put_bytes(&Path::from("p/xy/other"), vec![], WriteMode::Overwrite)
            .await
            .unwrap();
        let listed = b.list(&Path::from("p/x")).await.unwrap();
        assert_eq!(listed.len(), 30);
        assert!(listed.iter().all(|o| o.key.as_ref().starts_with("p/x/")));
        assert_eq!(listed[7].size, 7);
        b.delete(&Path::from("p/x/007")).await.unwrap();
        b.delete(&Path::from("p/x/007")).await.unwrap();
        assert_eq!(b.list(&Path::from("p/x")).await.unwrap().len(), 29);
        assert!(
            b.list(&Path::from("nothing/here"))
                .await
                .unwrap()
                .is_empty()
        );
    });
}
both!(
    list_sees_exactly_the_objects_under_a_prefix,
    list_sees_everything_under_a_prefix
);

fn damaged_zstd_is_an_error(tb: &TestBucket) {
    let b = tb.bucket();
    rt().block_on(async {
        let key = Path::from("a/bad.db.zst");
        b.put_bytes(
            &key,
            b"this is not zstd at all".to_vec(),
            WriteMode::Overwrite,
        )
        .await
        .unwrap();
        let dest = tempfile::NamedTempFile::new().unwrap();
        let err = b
            .get_to_file(&key, dest.path(), Encoding::Zstd(3), &NoProgress)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("a/bad.db.zst"), "{err}");
    });
}
both!(
    a_damaged_compressed_object_is_an_error_naming_the_key,
    damaged_zstd_is_an_error
);
