//! The store on PostgreSQL, shared by the nodes of a cluster.

pub use conn::Target;

#[allow(dead_code)]
mod conn;
#[allow(dead_code)]
mod schema;
// The side tables' and the history's queries (pgside's).
pub(crate) mod history;
pub(crate) mod side;

/// Logs in to the store at `target` and makes or checks its schema; what the side tables'
/// connections build on until the whole store lands.
pub fn connect_checked(target: &Target) -> Result<(), super::StoreError> {
    let conn = conn::Conn::open(target)?;
    schema::ensure(&conn)
}
