//! oxray-core (being built).
