//! Client transports: the WebSocket endpoint and handshake, the socket I/O and the per-socket
//! sessions. The wire codecs and the outbound queue they use live below, in `protocol`.

pub(crate) mod session;
pub(crate) mod websocket;
pub(crate) mod ws;
