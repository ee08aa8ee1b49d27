//! The origin core's tests, run over each engine: the in-memory one, and
//! PostgreSQL (a throwaway server, a fresh database per test), where commits go
//! through database transactions.

mod memory {
    use std::sync::Arc;

    use edgekv_store::{MemoryStore, Store};

    fn store() -> Arc<dyn Store> {
        Arc::new(MemoryStore::with_log())
    }

    include!("tests_body.rs");
}

mod postgres {
    use std::sync::Arc;

    use edgekv_store::Store;
    use edgekv_store_postgres::testing::TestPostgres;
    use edgekv_store_postgres::{PgOptions, PgStore};

    thread_local! {
        /// The server of this test's store: held until the test's thread ends.
        static SERVER: std::cell::RefCell<Option<Arc<TestPostgres>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// A store over a fresh database of the process's test server.
    fn store() -> Arc<dyn Store> {
        let server = TestPostgres::shared();
        let url = server.database();
        SERVER.with(|held| *held.borrow_mut() = Some(server));
        Arc::new(PgStore::open(&url, &PgOptions::default()).unwrap())
    }

    include!("tests_body.rs");
}
