pub mod dsn;
