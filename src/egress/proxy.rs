//! The per-execution socket and its connections (helper A implements).
