//! The channel server's integration tests, one module per file, linked into one test binary:
//! one link of the whole library instead of one per file. nextest still runs each test in its
//! own process; select a file's tests with `-E 'test(/^hardening_jwt::/)'`.

mod common;

mod channels_broadcast;
mod channels_limits;
mod channels_presence;
mod channels_private;
mod channels_protocol;
mod hardening_defaults;
mod hardening_fairness;
mod hardening_floods;
mod hardening_frames;
mod hardening_http;
mod hardening_jwt;
mod hardening_roles;
