//! RLlib-style building blocks for oxray (being built).
