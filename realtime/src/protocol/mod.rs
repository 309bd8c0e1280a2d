//! The wire, pure and without I/O: the Phoenix channel codec (vsn 1.0.0 JSON and 2.0.0 arrays
//! and binary broadcasts), the WebSocket frame codec (RFC 6455) and the per-socket queue of
//! encoded frames. Everything above it (features, sessions) encodes through it; it imports
//! nothing of theirs.

pub mod outbound;
pub mod phoenix;
pub mod ws_frame;
