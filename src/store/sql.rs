//! One SQL text for both backends: the store's operations are written once, against
//! [`Sql`], and run on SQLite (the embedded default) or on PostgreSQL (two hosts, one
//! queue).
//!
//! The text is SQLite's with what both understand: `?1`-style parameters (rewritten to
//! `$1` for PostgreSQL), `INSERT … ON CONFLICT DO NOTHING`, `RETURNING`, `COUNT(*) FILTER
//! (WHERE …)`. Values cross as SQLite's five kinds (`rusqlite::types::Value`): arguments
//! are anything `rusqlite::ToSql` (the domain types included), columns anything
//! `rusqlite::FromSql`, so one conversion per type serves both databases. PostgreSQL gets
//! each argument in the type its statement expects (BIGINT, TEXT, BYTEA, BOOLEAN).

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::types::{FromSql, ToSql, ToSqlOutput, Value, ValueRef};

/// What went wrong in the database, whichever it is.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_text(.0))]
    Postgres(#[from] postgres::Error),
    /// A query expected to find one row found none.
    #[error("no row found")]
    NoRow,
    /// A column that does not hold what the store expects (a newer release's database?).
    #[error("column {index}: {reason}")]
    Column { index: usize, reason: String },
}

impl DbError {
    /// The SQLSTATE of a PostgreSQL error (`40001`, `40P01`, `57P01`, …).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Postgres(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }
}

/// PostgreSQL's own message (its `Display` says only "db error").
fn postgres_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// A PostgreSQL connection with its prepared statements, by the store's SQL text.
pub struct PgConn {
    pub client: postgres::Client,
    prepared: HashMap<String, postgres::Statement>,
    /// The current request failed: its transaction is rolled back, not committed.
    pub failed: bool,
    /// The database's name (a test watches the statements run on one database).
    database: String,
}

impl PgConn {
    pub fn new(client: postgres::Client, database: &str) -> PgConn {
        PgConn {
            client,
            prepared: HashMap::new(),
            failed: false,
            database: database.to_owned(),
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, DbError> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client.prepare(&for_postgres(sql))?;
        // Dynamic texts (lists of ids) would grow this without end.
        if self.prepared.len() >= 256 {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// A connection inside the current transaction, on either backend.
pub enum Sql<'a> {
    Lite(&'a rusqlite::Connection),
    Pg(RefCell<&'a mut PgConn>),
}

/// One row of a result.
pub enum Row<'r> {
    Lite(&'r rusqlite::Row<'r>),
    Pg(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `index` as `T`.
    pub fn get<T: FromSql>(&self, index: usize) -> Result<T, DbError> {
        let column = |e: rusqlite::types::FromSqlError| DbError::Column {
            index,
            reason: e.to_string(),
        };
        match self {
            Row::Lite(r) => Ok(r.get(index)?),
            Row::Pg(r) => {
                let value = pg_column(r, index)?;
                T::column_result(ValueRef::from(&value)).map_err(column)
            }
        }
    }
}

/// A PostgreSQL column as one of SQLite's kinds.
fn pg_column(row: &postgres::Row, index: usize) -> Result<Value, DbError> {
    use postgres::types::Type;
    let ty = row.columns()[index].type_().clone();
    let value = match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(index)?
            .map_or(Value::Null, Value::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)?
            .map_or(Value::Null, |v| Value::Integer(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)?
            .map_or(Value::Null, |v| Value::Integer(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)?
            .map_or(Value::Null, |v| Value::Integer(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)?
            .map_or(Value::Null, Value::Real),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(index)?
            .map_or(Value::Null, Value::Blob),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
            .try_get::<_, Option<String>>(index)?
            .map_or(Value::Null, Value::Text),
        other => {
            return Err(DbError::Column {
                index,
                reason: format!(
                    "type {other} is not one the store reads (cast it to BIGINT or TEXT)"
                ),
            });
        }
    };
    Ok(value)
}

/// An argument for PostgreSQL, converted to what its parameter's type is.
#[derive(Debug)]
struct PgArg(Value);

impl postgres::types::ToSql for PgArg {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, ToSql as PgToSql, Type};
        match (&self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => PgToSql::to_sql(i, ty, out),
            (Value::Integer(i), &Type::INT4) => PgToSql::to_sql(&i32::try_from(*i)?, ty, out),
            (Value::Integer(i), &Type::INT2) => PgToSql::to_sql(&i16::try_from(*i)?, ty, out),
            (Value::Integer(i), &Type::BOOL) => PgToSql::to_sql(&(*i != 0), ty, out),
            (Value::Integer(i), &Type::FLOAT8) => PgToSql::to_sql(&(*i as f64), ty, out),
            (Value::Integer(i), &Type::TEXT | &Type::VARCHAR) => {
                PgToSql::to_sql(&i.to_string(), ty, out)
            }
            (Value::Real(f), &Type::FLOAT8) => PgToSql::to_sql(f, ty, out),
            (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                PgToSql::to_sql(&s.as_str(), ty, out)
            }
            (Value::Blob(b), &Type::BYTEA) => PgToSql::to_sql(&b.as_slice(), ty, out),
            (value, ty) => Err(format!("a {value:?} cannot be a parameter of type {ty}").into()),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn owned(arg: &dyn ToSql) -> Result<Value, DbError> {
    Ok(match arg.to_sql()? {
        ToSqlOutput::Borrowed(v) => Value::column_result(v).map_err(|e| DbError::Column {
            index: 0,
            reason: e.to_string(),
        })?,
        ToSqlOutput::Owned(v) => v,
        other => {
            return Err(DbError::Sqlite(rusqlite::Error::ToSqlConversionFailure(
                format!("{other:?} is not a plain value").into(),
            )));
        }
    })
}

fn pg_args(args: &[&dyn ToSql]) -> Result<Vec<PgArg>, DbError> {
    args.iter().map(|a| owned(*a).map(PgArg)).collect()
}

fn pg_refs(args: &[PgArg]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    args.iter()
        .map(|a| a as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl Sql<'_> {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Sql::Pg(_))
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn exec(&self, sql: &str, args: &[&dyn ToSql]) -> Result<usize, DbError> {
        match self {
            Sql::Lite(c) => {
                let mut statement = c.prepare_cached(sql)?;
                let n = statement.execute(args)?;
                watch::lite(c, &statement, sql);
                Ok(n)
            }
            Sql::Pg(c) => {
                let mut c = c.borrow_mut();
                watch::pg(&c.database, sql, args);
                let statement = c.statement(sql)?;
                let args = pg_args(args)?;
                let n = c.client.execute(&statement, &pg_refs(&args))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs an `INSERT` into a table keyed by `id` and returns the new row's id. SQLite
    /// reads it off the connection: a `RETURNING` there collects its rows in a temporary
    /// B-tree, built at every run.
    pub fn insert_id(&self, sql: &str, args: &[&dyn ToSql]) -> Result<i64, DbError> {
        match self {
            Sql::Lite(c) => {
                self.exec(sql, args)?;
                Ok(c.last_insert_rowid())
            }
            Sql::Pg(_) => self.one(&format!("{sql} RETURNING id"), args, |r| r.get(0)),
        }
    }

    /// Every row of a query, each as `f` makes it.
    pub fn all<T>(
        &self,
        sql: &str,
        args: &[&dyn ToSql],
        mut f: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        match self {
            Sql::Lite(c) => {
                let mut statement = c.prepare_cached(sql)?;
                let mut rows = statement.query(args)?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::Lite(r))?);
                }
                drop(rows);
                watch::lite(c, &statement, sql);
                Ok(out)
            }
            Sql::Pg(c) => {
                let mut c = c.borrow_mut();
                watch::pg(&c.database, sql, args);
                let statement = c.statement(sql)?;
                let args = pg_args(args)?;
                let rows = c.client.query(&statement, &pg_refs(&args))?;
                rows.iter().map(|r| f(&Row::Pg(r))).collect()
            }
        }
    }

    /// Hands every row of a query to `f` as it comes, without holding them all (an
    /// export of the whole queue).
    pub fn each(
        &self,
        sql: &str,
        args: &[&dyn ToSql],
        mut f: impl FnMut(&Row<'_>) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        match self {
            Sql::Lite(c) => {
                let mut statement = c.prepare(sql)?;
                let mut rows = statement.query(args)?;
                while let Some(r) = rows.next()? {
                    f(&Row::Lite(r))?;
                }
                Ok(())
            }
            Sql::Pg(c) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut c = c.borrow_mut();
                let statement = c.statement(sql)?;
                let args = pg_args(args)?;
                let mut rows = c.client.query_raw(&statement, pg_refs(&args))?;
                while let Some(r) = rows.next()? {
                    f(&Row::Pg(&r))?;
                }
                Ok(())
            }
        }
    }

    /// The first row of a query, if there is one.
    pub fn opt<T>(
        &self,
        sql: &str,
        args: &[&dyn ToSql],
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        match self {
            Sql::Lite(c) => {
                let mut statement = c.prepare_cached(sql)?;
                let mut rows = statement.query(args)?;
                let row = match rows.next()? {
                    Some(r) => f(&Row::Lite(r)).map(Some),
                    None => Ok(None),
                };
                drop(rows);
                watch::lite(c, &statement, sql);
                row
            }
            Sql::Pg(c) => {
                let mut c = c.borrow_mut();
                watch::pg(&c.database, sql, args);
                let statement = c.statement(sql)?;
                let args = pg_args(args)?;
                let rows = c.client.query(&statement, &pg_refs(&args))?;
                rows.first().map(|r| f(&Row::Pg(r))).transpose()
            }
        }
    }

    /// The first row of a query, which must have one.
    pub fn one<T>(
        &self,
        sql: &str,
        args: &[&dyn ToSql],
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.opt(sql, args, f)?.ok_or(DbError::NoRow)
    }

    /// Runs several statements without parameters (a migration).
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Sql::Lite(c) => Ok(c.execute_batch(sql)?),
            Sql::Pg(c) => Ok(c.borrow_mut().client.batch_execute(sql)?),
        }
    }
}

/// What a test sees of the statements run on one database: each text, how often it ran,
/// the most SQLite virtual-machine steps one run took (triggers included), and one set of
/// arguments (to ask PostgreSQL for its plan). Nothing is kept outside the tests.
#[cfg(test)]
pub mod watch {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use rusqlite::types::{ToSql, Value};

    #[derive(Debug, Default, Clone)]
    pub struct Seen {
        pub calls: u64,
        pub max_steps: i64,
        /// Times SQLite compiled the statement again before running it (a plan that
        /// depends on the values bound: parsing and planning at every call).
        pub reprepared: i64,
        pub args: Vec<Value>,
    }

    /// What ran on each database watched (a SQLite file's path or a PostgreSQL
    /// database's name). Keyed by database, so tests watching different databases at
    /// the same time each see only their own.
    static WATCHED: Mutex<Option<HashMap<String, HashMap<String, Seen>>>> = Mutex::new(None);

    /// Starts watching the statements run on `database`, forgetting what was seen.
    pub fn start(database: &str) {
        WATCHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(database.to_owned(), HashMap::new());
    }

    /// Stops watching `database`; returns what ran on it, by SQL text.
    pub fn stop(database: &str) -> HashMap<String, Seen> {
        WATCHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|watched| watched.remove(database))
            .unwrap_or_default()
    }

    fn note(
        database: &str,
        sql: &str,
        (steps, reprepared): (i64, i64),
        args: impl FnOnce() -> Vec<Value>,
    ) {
        let mut watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = watched.as_mut().and_then(|w| w.get_mut(database)) {
            let entry = seen.entry(sql.to_owned()).or_default();
            entry.calls += 1;
            entry.max_steps = entry.max_steps.max(steps);
            entry.reprepared += reprepared;
            if entry.args.is_empty() {
                entry.args = args();
            }
        }
    }

    pub(super) fn lite(c: &rusqlite::Connection, statement: &rusqlite::Statement<'_>, sql: &str) {
        use rusqlite::StatementStatus::{RePrepare, VmStep};
        let steps = statement.reset_status(VmStep);
        let reprepared = statement.reset_status(RePrepare);
        if let Some(path) = c.path() {
            note(path, sql, (steps.into(), reprepared.into()), Vec::new);
        }
    }

    /// PostgreSQL's plan of one of the store's statements with these arguments, a line
    /// per node.
    pub fn explain_postgres(
        client: &mut postgres::Client,
        sql: &str,
        args: &[Value],
    ) -> Result<Vec<String>, super::DbError> {
        let args: Vec<super::PgArg> = args.iter().cloned().map(super::PgArg).collect();
        let rows = client.query(
            &format!("EXPLAIN {}", super::for_postgres(sql)),
            &super::pg_refs(&args),
        )?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Runs a statement as the store ran it (a test counts what it reads).
    pub fn run_postgres(
        client: &mut impl postgres::GenericClient,
        sql: &str,
        args: &[Value],
    ) -> Result<u64, super::DbError> {
        let args: Vec<super::PgArg> = args.iter().cloned().map(super::PgArg).collect();
        let rows = client.query(&super::for_postgres(sql), &super::pg_refs(&args))?;
        Ok(rows.len() as u64)
    }

    pub(super) fn pg(database: &str, sql: &str, args: &[&dyn ToSql]) {
        note(database, sql, (0, 0), || {
            args.iter()
                .map(|a| super::owned(*a).unwrap_or(Value::Null))
                .collect()
        });
    }
}

/// Outside the tests, watching costs nothing.
#[cfg(not(test))]
mod watch {
    use rusqlite::types::ToSql;

    #[inline(always)]
    pub(super) fn lite(_: &rusqlite::Connection, _: &rusqlite::Statement<'_>, _: &str) {}

    #[inline(always)]
    pub(super) fn pg(_: &str, _: &str, _: &[&dyn ToSql]) {}
}

/// The store's SQL text in PostgreSQL's words: `?N` parameters become `$N` (outside
/// quoted literals), and SQLite's `INDEXED BY <index>` hints go.
pub fn for_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    while let Some(at) = out.find(" INDEXED BY ") {
        let rest = &out[at + " INDEXED BY ".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let tail = rest[end..].to_owned();
        out.truncate(at);
        out.push_str(&tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_hints_become_postgres_words() {
        assert_eq!(
            for_postgres("SELECT a FROM t INDEXED BY t_x WHERE a = ?1 AND b = '?2' AND c = ?12"),
            "SELECT a FROM t WHERE a = $1 AND b = '?2' AND c = $12"
        );
    }
}
