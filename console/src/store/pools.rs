//! The `engine_pools` table and its members: named groups of engines that share a site's scans.
//!
//! Pools and engines share one id space (as in InsightVM, where a site's `engineId` may name
//! either): a new pool takes the next id of the `engines` sequence and moves that sequence past
//! it, so no engine is ever given a pool's id, nor a pool an engine's.

use rusqlite::{Connection, OptionalExtension, params};

use super::Store;
use crate::error::Result;

/// One pool with its member engines (by id, ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRecord {
    pub id: i64,
    pub name: String,
    pub engines: Vec<i64>,
}

/// Why a pool change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChange {
    Done,
    /// No pool has that id.
    NoPool,
    /// Another pool has that name.
    NameTaken,
    /// A member named is not an engine.
    NoEngine(i64),
}

fn members(c: &Connection, pool: i64) -> rusqlite::Result<Vec<i64>> {
    let mut st = c.prepare_cached(
        "SELECT engine_id FROM engine_pool_members WHERE pool_id = ?1 ORDER BY engine_id",
    )?;
    st.query_map([pool], |r| r.get(0))?.collect()
}

fn pool(c: &Connection, id: i64) -> rusqlite::Result<Option<PoolRecord>> {
    let name: Option<String> = c
        .query_row("SELECT name FROM engine_pools WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    name.map(|name| {
        Ok(PoolRecord {
            id,
            name,
            engines: members(c, id)?,
        })
    })
    .transpose()
}

fn name_taken(c: &Connection, name: &str, except: i64) -> rusqlite::Result<bool> {
    Ok(c.query_row(
        "SELECT 1 FROM engine_pools WHERE name = ?1 AND id != ?2",
        params![name, except],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

/// The first of `engines` that is not an engine.
fn missing_engine(c: &Connection, engines: &[i64]) -> rusqlite::Result<Option<i64>> {
    let mut st = c.prepare_cached("SELECT 1 FROM engines WHERE id = ?1")?;
    for id in engines {
        if st.query_row([id], |_| Ok(())).optional()?.is_none() {
            return Ok(Some(*id));
        }
    }
    Ok(None)
}

fn set_members(c: &Connection, pool: i64, engines: &[i64]) -> rusqlite::Result<()> {
    c.execute("DELETE FROM engine_pool_members WHERE pool_id = ?1", [pool])?;
    let mut st = c.prepare_cached(
        "INSERT OR IGNORE INTO engine_pool_members (pool_id, engine_id) VALUES (?1, ?2)",
    )?;
    for e in engines {
        st.execute([pool, *e])?;
    }
    Ok(())
}

impl Store {
    /// Creates a pool of `engines`; its id, or why not.
    pub async fn create_pool(
        &self,
        name: String,
        engines: Vec<i64>,
    ) -> Result<Result<i64, PoolChange>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            if name_taken(&tx, &name, 0)? {
                return Ok(Err(PoolChange::NameTaken));
            }
            if let Some(e) = missing_engine(&tx, &engines)? {
                return Ok(Err(PoolChange::NoEngine(e)));
            }
            let next: i64 = tx.query_row(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'engines'), 0), \
                 COALESCE((SELECT MAX(id) FROM engines), 0), \
                 COALESCE((SELECT MAX(id) FROM engine_pools), 0)) + 1",
                [],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO engine_pools (id, name) VALUES (?1, ?2)",
                params![next, name],
            )?;
            if tx.execute(
                "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'engines'",
                [next],
            )? == 0
            {
                tx.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('engines', ?1)",
                    [next],
                )?;
            }
            set_members(&tx, next, &engines)?;
            tx.commit()?;
            Ok(Ok(next))
        })
        .await
    }

    /// Every pool, by id.
    pub async fn pools(&self) -> Result<Vec<PoolRecord>> {
        self.run(|c| {
            let ids: Vec<i64> = c
                .prepare("SELECT id FROM engine_pools ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(pool(c, id)?);
            }
            Ok(out)
        })
        .await
    }

    /// One pool.
    pub async fn pool(&self, id: i64) -> Result<Option<PoolRecord>> {
        self.run(move |c| Ok(pool(c, id)?)).await
    }

    /// The pools `engine` belongs to, by id.
    pub async fn pools_of_engine(&self, engine: i64) -> Result<Vec<i64>> {
        self.run(move |c| {
            let mut st = c.prepare(
                "SELECT pool_id FROM engine_pool_members WHERE engine_id = ?1 ORDER BY pool_id",
            )?;
            Ok(st
                .query_map([engine], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Renames a pool and, when `engines` is given, replaces its members.
    pub async fn update_pool(
        &self,
        id: i64,
        name: Option<String>,
        engines: Option<Vec<i64>>,
    ) -> Result<PoolChange> {
        self.run(move |c| {
            let tx = c.transaction()?;
            if pool(&tx, id)?.is_none() {
                return Ok(PoolChange::NoPool);
            }
            if let Some(name) = &name {
                if name_taken(&tx, name, id)? {
                    return Ok(PoolChange::NameTaken);
                }
                tx.execute(
                    "UPDATE engine_pools SET name = ?2 WHERE id = ?1",
                    params![id, name],
                )?;
            }
            if let Some(engines) = &engines {
                if let Some(e) = missing_engine(&tx, engines)? {
                    return Ok(PoolChange::NoEngine(e));
                }
                set_members(&tx, id, engines)?;
            }
            tx.commit()?;
            Ok(PoolChange::Done)
        })
        .await
    }

    /// Adds (`member`) or removes (`!member`) one engine of a pool.
    pub async fn set_pool_member(&self, id: i64, engine: i64, member: bool) -> Result<PoolChange> {
        self.run(move |c| {
            let tx = c.transaction()?;
            if pool(&tx, id)?.is_none() {
                return Ok(PoolChange::NoPool);
            }
            if missing_engine(&tx, &[engine])?.is_some() {
                return Ok(PoolChange::NoEngine(engine));
            }
            if member {
                tx.execute(
                    "INSERT OR IGNORE INTO engine_pool_members (pool_id, engine_id) VALUES (?1, ?2)",
                    [id, engine],
                )?;
            } else {
                tx.execute(
                    "DELETE FROM engine_pool_members WHERE pool_id = ?1 AND engine_id = ?2",
                    [id, engine],
                )?;
            }
            tx.commit()?;
            Ok(PoolChange::Done)
        })
        .await
    }

    /// Deletes a pool (its engines stay); false when there was none.
    pub async fn delete_pool(&self, id: i64) -> Result<bool> {
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM engine_pool_members WHERE pool_id = ?1", [id])?;
            let n = tx.execute("DELETE FROM engine_pools WHERE id = ?1", [id])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pools_and_engines_never_share_an_id_and_members_must_be_engines() {
        let s = Store::open_in_memory().unwrap();
        let a = s.create_standard_engine("a", "h", 1, 0).await.unwrap();
        let b = s.create_standard_engine("b", "h", 1, 0).await.unwrap();
        let pool = s
            .create_pool("p".into(), vec![b, a])
            .await
            .unwrap()
            .unwrap();
        assert!(pool > b);
        let c = s.create_standard_engine("c", "h", 1, 0).await.unwrap();
        assert!(c > pool, "an engine after a pool takes a fresh id");
        assert_eq!(
            s.pool(pool).await.unwrap().unwrap().engines,
            vec![a, b],
            "members by id"
        );
        assert_eq!(
            s.create_pool("p".into(), vec![]).await.unwrap(),
            Err(PoolChange::NameTaken)
        );
        assert_eq!(
            s.create_pool("q".into(), vec![999]).await.unwrap(),
            Err(PoolChange::NoEngine(999))
        );
        assert_eq!(
            s.set_pool_member(pool, c, true).await.unwrap(),
            PoolChange::Done
        );
        assert_eq!(s.pools_of_engine(c).await.unwrap(), vec![pool]);
        assert_eq!(
            s.set_pool_member(pool, a, false).await.unwrap(),
            PoolChange::Done
        );
        assert_eq!(s.pool(pool).await.unwrap().unwrap().engines, vec![b, c]);
        // Deleting an engine takes it out of its pools.
        s.delete_engine(b).await.unwrap();
        assert_eq!(s.pool(pool).await.unwrap().unwrap().engines, vec![c]);
        assert!(s.delete_pool(pool).await.unwrap());
        assert_eq!(s.pool(pool).await.unwrap(), None);
        assert!(!s.delete_pool(pool).await.unwrap());
    }

    #[tokio::test]
    async fn pools_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.db");
        let s = Store::open(&path).unwrap();
        let a = s.create_standard_engine("a", "h", 1, 0).await.unwrap();
        let pool = s.create_pool("p".into(), vec![a]).await.unwrap().unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.pools().await.unwrap(),
            vec![PoolRecord {
                id: pool,
                name: "p".into(),
                engines: vec![a]
            }]
        );
    }
}
