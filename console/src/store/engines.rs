//! The `engines` table: every engine the console knows, its pinned identity and what the console
//! last observed of it.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Page, Store, count, limit_offset};
use crate::{
    clock::Millis,
    error::{Error, Result},
};

/// Who dials whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Standard: the console dials the engine.
    ConsoleToEngine,
    /// Reverse: the engine dials the console.
    EngineToConsole,
}

impl Direction {
    /// The API and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ConsoleToEngine => "console-to-engine",
            Direction::EngineToConsole => "engine-to-console",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "engine-to-console" {
            Direction::EngineToConsole
        } else {
            Direction::ConsoleToEngine
        }
    }
}

/// What the last exchange with an engine showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Never contacted yet.
    None,
    /// A successful exchange (accepted, paired, welcomed, ping answered).
    Ok,
    /// The engine has not enabled this console.
    PendingAuthorization,
    /// The product versions differ.
    Incompatible,
    /// The engine could not be reached, or its session ended.
    Unreachable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::None => "none",
            Outcome::Ok => "ok",
            Outcome::PendingAuthorization => "pending-authorization",
            Outcome::Incompatible => "incompatible",
            Outcome::Unreachable => "unreachable",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "ok" => Outcome::Ok,
            "pending-authorization" => Outcome::PendingAuthorization,
            "incompatible" => Outcome::Incompatible,
            "unreachable" => Outcome::Unreachable,
            _ => Outcome::None,
        }
    }
}

/// One row of `engines`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineRecord {
    pub id: i64,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub direction: Direction,
    /// Pinned certificate fingerprint (`sha256:…`), once known.
    pub fingerprint: Option<String>,
    pub cert_pem: Option<String>,
    pub product_version: Option<String>,
    /// Last time the console checked the engine, whatever the result.
    pub last_refreshed: Option<Millis>,
    /// Last time anything about the engine changed.
    pub last_updated: Millis,
    /// Last successful exchange.
    pub last_contact: Option<Millis>,
    pub outcome: Outcome,
    pub message: String,
}

/// What one check of an engine showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub outcome: Outcome,
    pub message: String,
    /// The version the engine announced, when it said hello.
    pub product_version: Option<String>,
    pub at: Millis,
}

/// A reverse engine that just presented a valid shared secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReverseEngine {
    pub name: String,
    pub address: String,
    pub fingerprint: String,
    pub cert_pem: String,
    pub product_version: String,
    pub at: Millis,
}

const COLUMNS: &str = "id, name, address, port, direction, fingerprint, cert_pem, product_version, \
                       last_refreshed, last_updated, last_contact, outcome, message";

fn from_row(r: &Row<'_>) -> rusqlite::Result<EngineRecord> {
    Ok(EngineRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        address: r.get(2)?,
        port: r.get::<_, i64>(3)?.clamp(0, u16::MAX as i64) as u16,
        direction: Direction::parse(&r.get::<_, String>(4)?),
        fingerprint: r.get(5)?,
        cert_pem: r.get(6)?,
        product_version: r.get(7)?,
        last_refreshed: r.get(8)?,
        last_updated: r.get(9)?,
        last_contact: r.get(10)?,
        outcome: Outcome::parse(&r.get::<_, String>(11)?),
        message: r.get(12)?,
    })
}

fn select_one(
    conn: &Connection,
    clause: &str,
    p: impl rusqlite::Params,
) -> Result<Option<EngineRecord>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM engines WHERE {clause}"),
            p,
            from_row,
        )
        .optional()?)
}

fn name_taken(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM engines WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

impl Store {
    /// Every engine, by id.
    pub async fn engines(&self) -> Result<Vec<EngineRecord>> {
        self.run(|c| {
            let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM engines ORDER BY id"))?;
            let rows = st.query_map([], from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// One page of engines by id: `limit` rows from the `offset`-th, and how many there are.
    pub async fn engines_page(&self, offset: u64, limit: u64) -> Result<Page<EngineRecord>> {
        self.run(move |c| {
            let total = count(c, "engines")?;
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM engines ORDER BY id LIMIT ?1 OFFSET ?2"
            ))?;
            let rows = st.query_map(limit_offset(offset, limit), from_row)?;
            let items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page { items, total })
        })
        .await
    }

    /// One engine.
    pub async fn engine(&self, id: i64) -> Result<Option<EngineRecord>> {
        self.run(move |c| select_one(c, "id = ?1", [id])).await
    }

    /// The engine registered under `name`.
    pub async fn engine_by_name(&self, name: &str) -> Result<Option<EngineRecord>> {
        let name = name.to_owned();
        self.run(move |c| select_one(c, "name = ?1", [name])).await
    }

    /// The engine whose certificate is pinned to `fingerprint`.
    pub async fn engine_by_fingerprint(&self, fingerprint: &str) -> Result<Option<EngineRecord>> {
        let fp = fingerprint.to_owned();
        self.run(move |c| select_one(c, "fingerprint = ?1", [fp]))
            .await
    }

    /// Adds a console-to-engine engine; [`Error::NameTaken`] when the name exists.
    pub async fn create_standard_engine(
        &self,
        name: &str,
        address: &str,
        port: u16,
        at: Millis,
    ) -> Result<i64> {
        let (name, address) = (name.to_owned(), address.to_owned());
        self.run(move |c| {
            let tx = c.transaction()?;
            if name_taken(&tx, &name)? {
                return Err(Error::NameTaken(name));
            }
            tx.execute(
                "INSERT INTO engines (name, address, port, direction, last_updated, message) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'not contacted yet')",
                params![name, address, port, Direction::ConsoleToEngine.as_str(), at],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    /// Registers (or re-pairs) an engine-to-console engine and pins its certificate. An engine
    /// already pinned to the same certificate keeps its id and becomes engine-to-console;
    /// [`Error::NameTaken`] when another identity holds the name.
    pub async fn pair_reverse_engine(&self, new: NewReverseEngine) -> Result<i64> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let same_identity = select_one(&tx, "fingerprint = ?1", [&new.fingerprint])?;
            let by_name = select_one(&tx, "name = ?1", [&new.name])?;
            if let Some(other) = &by_name
                && same_identity.as_ref().map(|e| e.id) != Some(other.id)
            {
                return Err(Error::NameTaken(new.name));
            }
            let id = match same_identity {
                Some(existing) => {
                    tx.execute(
                        "UPDATE engines SET name = ?2, address = ?3, port = 0, direction = ?4, cert_pem = ?5, \
                         product_version = ?6, last_refreshed = ?7, last_updated = ?7, last_contact = ?7, \
                         outcome = 'ok', message = 'paired (engine-to-console)' WHERE id = ?1",
                        params![
                            existing.id,
                            new.name,
                            new.address,
                            Direction::EngineToConsole.as_str(),
                            new.cert_pem,
                            new.product_version,
                            new.at
                        ],
                    )?;
                    existing.id
                }
                None => {
                    tx.execute(
                        "INSERT INTO engines (name, address, port, direction, fingerprint, cert_pem, product_version, \
                         last_refreshed, last_updated, last_contact, outcome, message) \
                         VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?7, ?7, 'ok', 'paired (engine-to-console)')",
                        params![
                            new.name,
                            new.address,
                            Direction::EngineToConsole.as_str(),
                            new.fingerprint,
                            new.cert_pem,
                            new.product_version,
                            new.at
                        ],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    /// Pins a standard engine's certificate on first contact.
    pub async fn pin_engine(&self, id: i64, fingerprint: &str, cert_pem: &str) -> Result<()> {
        let (fp, pem) = (fingerprint.to_owned(), cert_pem.to_owned());
        self.run(move |c| {
            c.execute(
                "UPDATE engines SET fingerprint = ?2, cert_pem = ?3 WHERE id = ?1",
                params![id, fp, pem],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a reverse engine's current address (it may move between sessions).
    pub async fn set_engine_address(&self, id: i64, address: &str) -> Result<()> {
        let address = address.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE engines SET address = ?2 WHERE id = ?1",
                params![id, address],
            )?;
            Ok(())
        })
        .await
    }

    /// Records what a check of the engine showed. `last_updated` moves only when the outcome,
    /// message or version changed; `last_contact` only on success.
    /// Batched with other observations and findings ([`Store::run_batched`]).
    pub async fn observe(&self, id: i64, obs: Observation) -> Result<()> {
        self.run_batched(move |c| {
            c.execute(
                "UPDATE engines SET \
                   last_updated = CASE WHEN outcome IS NOT ?2 OR message IS NOT ?3 \
                       OR (?4 IS NOT NULL AND product_version IS NOT ?4) THEN ?5 ELSE last_updated END, \
                   outcome = ?2, message = ?3, \
                   product_version = COALESCE(?4, product_version), \
                   last_refreshed = ?5, \
                   last_contact = CASE WHEN ?2 = 'ok' THEN ?5 ELSE last_contact END \
                 WHERE id = ?1",
                params![id, obs.outcome.as_str(), obs.message, obs.product_version, obs.at],
            )?;
            Ok(())
        })
        .await
    }

    /// Removes an engine (and so unpins its certificate); false when there was none.
    pub async fn delete_engine(&self, id: i64) -> Result<bool> {
        self.run(move |c| Ok(c.execute("DELETE FROM engines WHERE id = ?1", [id])? > 0))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reverse(name: &str, fp: &str) -> NewReverseEngine {
        NewReverseEngine {
            name: name.into(),
            address: "10.0.0.9".into(),
            fingerprint: fp.into(),
            cert_pem: "PEM".into(),
            product_version: "0.1.0".into(),
            at: 1000,
        }
    }

    #[tokio::test]
    async fn standard_engines_round_trip_and_names_are_unique() {
        let s = Store::open_in_memory().unwrap();
        let id = s
            .create_standard_engine("e1", "e1.ns.svc", 40814, 5)
            .await
            .unwrap();
        let e = s.engine(id).await.unwrap().unwrap();
        assert_eq!(
            (e.name.as_str(), e.address.as_str(), e.port),
            ("e1", "e1.ns.svc", 40814)
        );
        assert_eq!(e.direction, Direction::ConsoleToEngine);
        assert_eq!(e.outcome, Outcome::None);
        assert_eq!(e.last_updated, 5);
        assert!(matches!(
            s.create_standard_engine("e1", "x", 1, 6).await,
            Err(Error::NameTaken(n)) if n == "e1"
        ));
        assert!(s.delete_engine(id).await.unwrap());
        assert!(!s.delete_engine(id).await.unwrap());
        assert!(s.engine(id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn observations_move_timestamps() {
        let s = Store::open_in_memory().unwrap();
        let id = s.create_standard_engine("e1", "a", 1, 0).await.unwrap();
        let ok = |at| Observation {
            outcome: Outcome::Ok,
            message: "accepted".into(),
            product_version: Some("0.1.0".into()),
            at,
        };
        s.observe(id, ok(10)).await.unwrap();
        s.observe(id, ok(20)).await.unwrap();
        let e = s.engine(id).await.unwrap().unwrap();
        assert_eq!(
            (e.last_updated, e.last_refreshed, e.last_contact),
            (10, Some(20), Some(20))
        );
        assert_eq!(e.product_version.as_deref(), Some("0.1.0"));
        s.observe(
            id,
            Observation {
                outcome: Outcome::Unreachable,
                message: "connection refused".into(),
                product_version: None,
                at: 30,
            },
        )
        .await
        .unwrap();
        let e = s.engine(id).await.unwrap().unwrap();
        assert_eq!(
            (e.last_updated, e.last_refreshed, e.last_contact),
            (30, Some(30), Some(20))
        );
        assert_eq!(e.outcome, Outcome::Unreachable);
        assert_eq!(e.product_version.as_deref(), Some("0.1.0"));
    }

    #[tokio::test]
    async fn reverse_pairing_pins_and_guards_names() {
        let s = Store::open_in_memory().unwrap();
        let id = s
            .pair_reverse_engine(reverse("r1", "sha256:aa"))
            .await
            .unwrap();
        let e = s.engine_by_fingerprint("sha256:aa").await.unwrap().unwrap();
        assert_eq!(
            (e.id, e.port, e.direction),
            (id, 0, Direction::EngineToConsole)
        );
        // Same identity pairs again: same id.
        assert_eq!(
            s.pair_reverse_engine(reverse("r1", "sha256:aa"))
                .await
                .unwrap(),
            id
        );
        // Another identity cannot take the name.
        assert!(matches!(
            s.pair_reverse_engine(reverse("r1", "sha256:bb")).await,
            Err(Error::NameTaken(_))
        ));
        assert!(
            s.engine_by_fingerprint("sha256:bb")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn engines_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.db");
        let id = {
            let s = Store::open(&path).unwrap();
            s.pair_reverse_engine(reverse("r1", "sha256:aa"))
                .await
                .unwrap()
        };
        let s = Store::open(&path).unwrap();
        let e = s.engine(id).await.unwrap().unwrap();
        assert_eq!(e.fingerprint.as_deref(), Some("sha256:aa"));
        assert_eq!(e.cert_pem.as_deref(), Some("PEM"));
        assert_eq!(s.engines().await.unwrap().len(), 1);
    }
}
