//! Symbolization: addresses to function names, on the host, at collection time.

pub mod go;
