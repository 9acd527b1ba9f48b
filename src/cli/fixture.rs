//! Realistic connector databases, built in code, for `hubvault demo`, the tests and the
//! benchmarks.
//!
//! Not part of the library's API: the binary declares it as a module, and the tests and
//! the benchmark example include this file by path.
//!
//! The schema is the plausible reconstruction in `fixture_schema.sql` (a copy of
//! `shared/fixtures/schema.sql`): `Integrations` and `Events` as the platform's documentation states them,
//! plus `Uploads`, `Commands` and `SequelizeMeta`. The ids also appear where the platform's
//! manual SQL does not look: `Integrations.state` is keyed by connector id, and upload
//! paths name `/var/datahub/<connectorId>/`.

use std::path::Path;

use rusqlite::{Connection, params};

use hubvault::model::ids::{ConnectorId, DatahubId};
use hubvault::{Error, Result};

pub const SCHEMA: &str = include_str!("fixture_schema.sql");

/// The four connector types, with a plausible source name each.
pub const CONNECTOR_TYPES: [(&str, &str); 4] = [
    ("hrb-cellario", "Cellario Screening Cell 2"),
    ("sdc", "AGU SDC Upstream"),
    ("idbs-eworkbook", "E-WorkBook Bioassay"),
    ("solace", "Solace QC events"),
];

#[derive(Clone, Debug)]
pub struct Spec {
    pub datahub: DatahubId,
    pub connector: ConnectorId,
    pub source_type: String,
    pub name: String,
    pub events: usize,
    /// True if and only if the database is left in WAL mode (as connectors run it).
    pub wal: bool,
    /// `PRAGMA encoding` of the new file (`UTF-8` when `None`, as connectors write it).
    pub encoding: Option<&'static str>,
}

impl Spec {
    pub fn new(source_type: &str, name: &str, events: usize) -> Self {
        Spec {
            datahub: DatahubId::random(),
            connector: ConnectorId::random(),
            source_type: source_type.into(),
            name: name.into(),
            events,
            wal: true,
            encoding: None,
        }
    }

    /// The source object as the platform writes it.
    pub fn source_json(&self) -> serde_json::Value {
        let config = match self.source_type.as_str() {
            "idbs-eworkbook" => {
                serde_json::json!({"sourceType": self.source_type, "folderPath": "/Root/Biology/Bioassay/2024"})
            }
            "sdc" => {
                serde_json::json!({"sourceType": self.source_type, "exportInterface": "tdp-export-1"})
            }
            "solace" => {
                serde_json::json!({"sourceType": self.source_type, "queue": "q.tdp.ingest"})
            }
            _ => serde_json::json!({"sourceType": self.source_type}),
        };
        serde_json::json!({
            "id": self.connector.to_string(),
            "integrationId": self.datahub.to_string(),
            "name": self.name,
            "type": self.source_type,
            "config": config,
            "metadata": {"site": "Boston"},
            "tags": ["lab"],
        })
    }
}

/// Creates a connector database at `path` (which must not exist).
pub fn create(path: &Path, spec: &Spec) -> Result<()> {
    let mut conn =
        Connection::open(path).map_err(|e| Error::sqlite(path, "cannot create fixture", e))?;
    populate(&mut conn, spec).map_err(|e| Error::sqlite(path, "cannot fill fixture", e))
}

fn populate(conn: &mut Connection, spec: &Spec) -> rusqlite::Result<()> {
    if let Some(e) = spec.encoding {
        conn.pragma_update(None, "encoding", e)?;
    }
    if spec.wal {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.execute_batch(SCHEMA)?;
    let source = spec.source_json();
    let hub = spec.datahub.to_string();
    let cid = spec.connector.to_string();
    let state = serde_json::json!({ cid.clone(): {"lastEventTime": "2026-11-20T09:10:03Z", "cursor": 1000 + spec.events} });
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO Integrations (id, type, sources, state, createdAt, updatedAt) VALUES (?1, ?2, json(?3), json(?4), ?5, ?5)",
        params![hub, spec.source_type, serde_json::json!([source]).to_string(), state.to_string(), "2026-03-01 14:02:11.123 +00:00"],
    )?;
    tx.execute("INSERT INTO SequelizeMeta (name) VALUES ('20240101000000-create-integrations.js'), ('20240301000000-create-events.js')", [])?;
    {
        let mut ev = tx.prepare(
            "INSERT INTO Events (integration, source, externalId, eventType, occurredAt, payload, status, attempts, lastError, fileId, createdAt, updatedAt)
             VALUES (?1, json(?2), ?3, ?4, ?5, json(?6), ?7, ?8, ?9, ?10, ?5, ?5)",
        )?;
        let mut up = tx.prepare(
            "INSERT INTO Uploads (eventId, filePath, sizeBytes, md5, labels, status, attempts, fileId, createdAt, updatedAt)
             VALUES (?1, ?2, ?3, ?4, json(?5), 'SENT', 1, ?6, ?7, ?7)",
        )?;
        let source_text = source.to_string();
        for i in 0..spec.events {
            let (external, kind, payload) = event_shape(&spec.source_type, i);
            let at = format!(
                "2026-11-{:02} {:02}:{:02}:{:02}.000 +00:00",
                1 + i % 20,
                i / 3600 % 24,
                i / 60 % 60,
                i % 60
            );
            let (status, file_id) = match i % 10 {
                0 => ("FAILED", None),
                1 => ("PENDING", None),
                _ => ("UPLOADED", Some(uuid_from(i as u64, spec.connector))),
            };
            let error = (status == "FAILED").then_some("ETIMEDOUT s3.us-east-1.amazonaws.com");
            ev.execute(params![
                hub,
                source_text,
                external,
                kind,
                at,
                payload,
                status,
                (i % 3) as i64,
                error,
                file_id
            ])?;
            if file_id.is_some() && i % 4 == 0 {
                let event_id = tx.last_insert_rowid();
                let path = format!(
                    "/var/datahub/{cid}/outbox/{}/{external}.json",
                    spec.source_type
                );
                up.execute(params![
                    event_id,
                    path,
                    900 + i as i64 * 7 % 20000,
                    format!("{:032x}", i * 7919),
                    format!("[{{\"name\":\"connector\",\"value\":\"{cid}\"}}]"),
                    file_id,
                    at
                ])?;
            }
        }
    }
    tx.execute(
        "INSERT INTO Commands (id, action, request, status, createdAt, updatedAt) VALUES (?1, 'Ping', json(?2), 'SUCCESS', ?3, ?3)",
        params![uuid_from(u64::MAX, spec.connector), serde_json::json!({"from": "platform"}).to_string(), "2026-11-20 09:20:00.000 +00:00"],
    )?;
    tx.commit()?;
    Ok(())
}

fn event_shape(source_type: &str, i: usize) -> (String, &'static str, String) {
    match source_type {
        "hrb-cellario" => (
            format!("order-{}", 10000 + i),
            "ORDER_COMPLETED",
            serde_json::json!({"orderId": 10000 + i, "protocol": "ELISA_384_v3", "plates": [format!("BC{:06}", i * 2), format!("BC{:06}", i * 2 + 1)], "state": "Completed"}).to_string(),
        ),
        "idbs-eworkbook" => (
            format!("EXP-2026-{:06}@v{}", i / 8, i % 8 + 1),
            "EXPERIMENT_VERSION_SAVED",
            serde_json::json!({"entityId": format!("{:032x}", i * 104729), "versionNumber": i % 8 + 1, "spreadsheets": i % 4}).to_string(),
        ),
        "sdc" => (
            format!("meas-{}", 80000 + i),
            "MEASUREMENT",
            serde_json::json!({"instrument": "Cedex Bio HT", "sampleId": format!("BR-{:02}-D{}", i % 40, i % 9), "analyte": (["Glucose", "Lactate", "Glutamine"][i % 3]), "value": (i % 700) as f64 / 100.0, "unit": "g/L"}).to_string(),
        ),
        _ => (
            format!("rmid1:{:04x}-{:04x}", i / 65536, i % 65536),
            "MESSAGE_RECEIVED",
            serde_json::json!({"topic": "lab/qc/hplc/run/completed", "correlationId": format!("RUN-{}", 5000 + i)}).to_string(),
        ),
    }
}

/// A deterministic, valid-looking UUID derived from a number and a connector (TDP file
/// and command ids: not hub or connector ids).
fn uuid_from(n: u64, salt: ConnectorId) -> String {
    let s = salt.as_uuid().as_u128()
        ^ (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    uuid::Builder::from_random_bytes(s.to_be_bytes())
        .into_uuid()
        .hyphenated()
        .to_string()
}
