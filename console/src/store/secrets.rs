//! The `shared_secret` table: pairing secrets, newest last. Lifecycle rules live in
//! `crate::shared_secret`; this is only their storage.

use rusqlite::{Row, params};

use super::Store;
use crate::{clock::Millis, error::Result};

/// One generated shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: i64,
    pub value: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub revoked: bool,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("id", &self.id)
            .field("value", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// How many old secrets are kept (so that an engine presenting an old one hears "expired").
const KEEP: i64 = 20;

fn from_row(r: &Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        id: r.get(0)?,
        value: r.get(1)?,
        created_at: r.get(2)?,
        expires_at: r.get(3)?,
        revoked: r.get::<_, i64>(4)? != 0,
    })
}

impl Store {
    /// The most recent secrets, newest first.
    pub async fn secrets(&self) -> Result<Vec<SecretRecord>> {
        self.run(|c| {
            let mut st = c.prepare(
                "SELECT id, value, created_at, expires_at, revoked FROM shared_secret ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st.query_map([KEEP], from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Stores a new secret and forgets the oldest ones.
    pub async fn insert_secret(
        &self,
        value: String,
        created_at: Millis,
        expires_at: Millis,
    ) -> Result<i64> {
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO shared_secret (value, created_at, expires_at) VALUES (?1, ?2, ?3)",
                params![value, created_at, expires_at],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute("DELETE FROM shared_secret WHERE id <= ?1", [id - KEEP])?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    /// Revokes every secret.
    pub async fn revoke_secrets(&self) -> Result<()> {
        self.run(|c| {
            c.execute("UPDATE shared_secret SET revoked = 1", [])?;
            Ok(())
        })
        .await
    }
}
