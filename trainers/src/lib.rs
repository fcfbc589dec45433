//! Training algorithms for oxray (being built).
