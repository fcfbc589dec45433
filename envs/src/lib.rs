//! Gymnasium-compatible environment API for oxray (being built).
