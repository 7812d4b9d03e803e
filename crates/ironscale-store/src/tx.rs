//! [`Tx`]: a database transaction on which the store's operations run.

use sqlx::{Any, AnyConnection, Transaction};

use crate::{Backend, Result};

/// An open transaction, from [`crate::Store::begin`]. Every operation of the
/// store is a method here too (same names, same results); none is visible to
/// others until [`Tx::commit`]. Dropping a `Tx` without committing rolls it
/// back (on the connection's next use, before it serves anyone else).
pub struct Tx {
    tx: Transaction<'static, Any>,
    backend: Backend,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Tx {
    pub(crate) fn new(tx: Transaction<'static, Any>, backend: Backend) -> Tx {
        Tx { tx, backend }
    }

    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Make every write of this transaction durable and visible.
    pub async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    /// Undo every write of this transaction now (dropping the `Tx` does the same, later).
    pub async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }
}
