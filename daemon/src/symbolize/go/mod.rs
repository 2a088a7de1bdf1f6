//! Go binaries: symbols, inline frames and stack-frame sizes from `.gopclntab`.
