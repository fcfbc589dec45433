//! Attribute macros for oxray (being built).
