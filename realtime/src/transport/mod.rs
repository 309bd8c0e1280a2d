//! Client transports: the Phoenix frame codec, per-socket sessions, their bounded outbound
//! queues and the WebSocket endpoint.

pub mod outbound;
pub mod phoenix;
pub mod session;
pub mod websocket;
pub mod ws;
