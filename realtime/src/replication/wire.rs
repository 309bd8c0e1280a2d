//! One Postgres connection in replication mode, on `postgres-protocol`'s message codecs:
//! TCP with optional TLS (rustls), password / MD5 / SCRAM-SHA-256 authentication, simple queries
//! (replication commands and plain SQL), and the CopyBoth stream of START_REPLICATION.
//!
//! Owns its socket and buffers; nothing here decides what to replicate or confirm.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{DatabaseConfig, SslMode};
use crate::lsn::Lsn;

/// Settings pinned for the walsender session, because value output functions run there: these
/// make the text of every value the same as `to_jsonb` expects it (see `values`).
const SESSION_OPTIONS: &str = "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres \
     -c bytea_output=hex -c extra_float_digits=1";

/// Frames larger than this are refused rather than buffered (a healthy server never sends one:
/// pgoutput rows are bounded by Postgres's 1 GB field limit, and we cap well below it).
const MAX_FRAME: usize = 1 << 30;

/// Each message says what failed; the I/O error under it is its `source` (print the chain with
/// [`telemetry::chain`](crate::telemetry::chain)).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot connect to {target}")]
    Connect { target: String, source: io::Error },
    #[error("connection to the database was lost")]
    Io(#[from] io::Error),
    #[error(
        "the server does not offer TLS, but sslmode={} requires it (set sslmode=prefer or disable to connect without TLS)",
        .0.as_str()
    )]
    TlsUnsupported(SslMode),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("TLS handshake failed")]
    TlsHandshake(#[source] io::Error),
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server's SCRAM message did not check out (its signature, nonce or format).
    #[error("authentication failed")]
    Scram(#[source] io::Error),
    #[error("{0}")]
    Server(PgError),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl WireError {
    /// The server's SQLSTATE, if the server refused something.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            WireError::Server(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// An ErrorResponse from the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(d) = &self.detail {
            write!(f, "; {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

/// Rows of a simple query, as text (NULL → `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    /// The value of `column` in the first row.
    pub fn first(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.first()?.get(i)?.as_deref()
    }
}

/// What arrives during CopyBoth.
#[derive(Debug)]
pub enum ReplicationMessage {
    /// XLogData: the WAL start of this record and a pgoutput message.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        data: Bytes,
    },
    /// Primary keepalive: the walsender's sent position and whether it wants a reply now.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection with `replication=database`.
pub struct ReplicationConnection {
    stream: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
    pub backend_pid: i32,
    pub parameters: HashMap<String, String>,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("backend_pid", &self.backend_pid)
            .finish()
    }
}

impl ReplicationConnection {
    /// Connects, negotiates TLS as configured, and authenticates.
    pub async fn connect(config: &DatabaseConfig, application_name: &str) -> Result<Self, WireError> {
        Self::connect_with(config, application_name, "").await
    }

    /// [`connect`](Self::connect), with `options` (`-c name=value ...`) added to the session's.
    pub async fn connect_with(
        config: &DatabaseConfig,
        application_name: &str,
        options: &str,
    ) -> Result<Self, WireError> {
        let target = format!("{}:{}", config.host, config.port);
        let tcp = TcpStream::connect((config.host.as_str(), config.port))
            .await
            .map_err(|source| WireError::Connect {
                target: target.clone(),
                source,
            })?;
        tcp.set_nodelay(true)?;
        let stream = negotiate_tls(tcp, config).await?;
        let mut conn = ReplicationConnection {
            stream,
            read: BytesMut::with_capacity(128 * 1024),
            write: BytesMut::with_capacity(1024),
            backend_pid: 0,
            parameters: HashMap::new(),
        };
        conn.startup(config, application_name, options).await?;
        Ok(conn)
    }

    async fn startup(
        &mut self,
        config: &DatabaseConfig,
        application_name: &str,
        options: &str,
    ) -> Result<(), WireError> {
        let options = format!("{SESSION_OPTIONS} {options}");
        let params = [
            ("user", config.user.as_str()),
            ("database", config.dbname.as_str()),
            ("replication", "database"),
            ("application_name", application_name),
            ("options", options.trim_end()),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.write)?;
        self.flush().await?;
        let password = config.password.expose().as_bytes();
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.next_message().await? {
                backend::Message::AuthenticationOk => {}
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password, &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        config.user.as_bytes(),
                        password,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechanisms.next()? {
                        has_scram |= m == SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(WireError::Auth(
                            "the server offers no SASL mechanism we support".into(),
                        ));
                    }
                    let s = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.write)?;
                    self.flush().await?;
                    scram = Some(s);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol("SASL continue without a start"))?;
                    s.update(body.data()).map_err(WireError::Scram)?;
                    frontend::sasl_response(s.message(), &mut self.write)?;
                    self.flush().await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| protocol("SASL final without a start"))?;
                    s.finish(body.data()).map_err(WireError::Scram)?;
                }
                backend::Message::ParameterStatus(p) => {
                    self.parameters
                        .insert(p.name()?.to_owned(), p.value()?.to_owned());
                }
                backend::Message::BackendKeyData(k) => self.backend_pid = k.process_id(),
                backend::Message::ReadyForQuery(_) => return Ok(()),
                backend::Message::ErrorResponse(e) => return Err(WireError::Server(pg_error(e.fields())?)),
                backend::Message::NoticeResponse(_) => {}
                _ => return Err(protocol("unexpected message during startup")),
            }
        }
    }

    /// Runs one simple query (a replication command or SQL) and collects its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Rows, WireError> {
        frontend::query(sql, &mut self.write)?;
        self.flush().await?;
        let mut rows = Rows::default();
        let mut error = None;
        loop {
            match self.next_message().await? {
                backend::Message::RowDescription(d) => {
                    rows.columns = d.fields().map(|f| Ok(f.name().to_owned())).collect()?;
                }
                backend::Message::DataRow(r) => {
                    let buf = r.buffer();
                    let row = r
                        .ranges()
                        .map(|range| Ok(range.map(|range| String::from_utf8_lossy(&buf[range]).into_owned())))
                        .collect()?;
                    rows.rows.push(row);
                }
                backend::Message::ErrorResponse(e) => error = Some(pg_error(e.fields())?),
                backend::Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(WireError::Server(e)),
                        None => Ok(rows),
                    };
                }
                // CommandComplete, EmptyQueryResponse, notices, parameter changes.
                _ => {}
            }
        }
    }

    /// Sends START_REPLICATION and waits for the CopyBoth response.
    pub async fn start_replication(&mut self, command: &str) -> Result<(), WireError> {
        frontend::query(command, &mut self.write)?;
        self.flush().await?;
        loop {
            match self.next_frame().await? {
                Frame::CopyBoth => return Ok(()),
                Frame::Other(backend::Message::ErrorResponse(e)) => {
                    let err = pg_error(e.fields())?;
                    // The server follows an error with ReadyForQuery; consume it so the
                    // connection stays usable.
                    self.wait_ready().await?;
                    return Err(WireError::Server(err));
                }
                Frame::Other(backend::Message::NoticeResponse(_)) => {}
                _ => return Err(protocol("unexpected reply to START_REPLICATION")),
            }
        }
    }

    async fn wait_ready(&mut self) -> Result<(), WireError> {
        loop {
            if let backend::Message::ReadyForQuery(_) = self.next_message().await? {
                return Ok(());
            }
        }
    }

    /// The next message of the CopyBoth stream. `Ok(None)` when the server ended the stream.
    /// Cancel-safe: a partial frame stays in the buffer for the next call.
    pub async fn next_replication_message(&mut self) -> Result<Option<ReplicationMessage>, WireError> {
        loop {
            let message = match self.next_frame().await? {
                Frame::Other(m) => m,
                Frame::CopyBoth => return Err(protocol("a second CopyBothResponse")),
            };
            match message {
                backend::Message::CopyData(body) => return parse_copy_data(body.into_bytes()).map(Some),
                backend::Message::CopyDone => return Ok(None),
                backend::Message::ErrorResponse(e) => return Err(WireError::Server(pg_error(e.fields())?)),
                backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_) => {}
                _ => return Err(protocol("unexpected message in the replication stream")),
            }
        }
    }

    /// Sends a standby status update. For a logical slot, `flush` becomes the slot's
    /// `confirmed_flush_lsn`.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        reply_requested: bool,
    ) -> Result<(), WireError> {
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(write.0);
        body.put_u64(flush.0);
        body.put_u64(flush.0);
        body.put_i64(pg_now());
        body.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(body.freeze())?.write(&mut self.write);
        self.flush().await
    }

    /// Ends CopyBoth and the session politely: CopyDone, then Terminate. A temporary slot is
    /// dropped by the server when the session ends.
    pub async fn close(mut self) -> Result<(), WireError> {
        frontend::copy_done(&mut self.write);
        frontend::terminate(&mut self.write);
        self.flush().await?;
        self.stream.shutdown().await.ok();
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), WireError> {
        self.stream.write_all(&self.write).await?;
        self.write.clear();
        self.stream.flush().await?;
        Ok(())
    }

    async fn next_message(&mut self) -> Result<backend::Message, WireError> {
        match self.next_frame().await? {
            Frame::Other(m) => Ok(m),
            Frame::CopyBoth => Err(protocol("unexpected CopyBothResponse")),
        }
    }

    async fn next_frame(&mut self) -> Result<Frame, WireError> {
        loop {
            if let Some(header) = backend::Header::parse(&self.read)? {
                let len = header.len() as usize + 1;
                if len > MAX_FRAME {
                    return Err(protocol("a frame larger than 1 GiB"));
                }
                // postgres-protocol's parser does not know CopyBothResponse ('W'): take it here.
                if header.tag() == b'W' {
                    if self.read.len() >= len {
                        self.read.advance(len);
                        return Ok(Frame::CopyBoth);
                    }
                } else if let Some(message) = backend::Message::parse(&mut self.read)? {
                    return Ok(Frame::Other(message));
                }
                self.read.reserve(len.saturating_sub(self.read.len()));
            }
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return Err(WireError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
    }
}

enum Frame {
    CopyBoth,
    Other(backend::Message),
}

fn parse_copy_data(mut data: Bytes) -> Result<ReplicationMessage, WireError> {
    if data.is_empty() {
        return Err(protocol("empty CopyData"));
    }
    match data.get_u8() {
        b'w' if data.len() >= 24 => {
            let wal_start = Lsn(data.get_u64());
            let wal_end = Lsn(data.get_u64());
            let _send_time = data.get_i64();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                data,
            })
        }
        b'k' if data.len() >= 17 => {
            let wal_end = Lsn(data.get_u64());
            let _send_time = data.get_i64();
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                reply_requested: data.get_u8() == 1,
            })
        }
        _ => Err(protocol("unknown or short CopyData message")),
    }
}

fn pg_error(mut fields: backend::ErrorFields<'_>) -> Result<PgError, WireError> {
    let mut e = PgError::default();
    while let Some(field) = fields.next()? {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'S' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            _ => {}
        }
    }
    Ok(e)
}

fn protocol(what: &str) -> WireError {
    WireError::Protocol(what.to_owned())
}

/// Microseconds since 2000-01-01 UTC, Postgres's epoch.
fn pg_now() -> i64 {
    const PG_EPOCH_OFFSET_SECS: i64 = 946_684_800;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_micros() as i64) - PG_EPOCH_OFFSET_SECS * 1_000_000
}

async fn negotiate_tls(mut tcp: TcpStream, config: &DatabaseConfig) -> Result<Box<dyn Stream>, WireError> {
    if config.ssl_mode == SslMode::Disable {
        return Ok(Box::new(tcp));
    }
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    let answer = tcp.read_u8().await?;
    if answer != b'S' {
        return if config.ssl_mode == SslMode::Prefer {
            Ok(Box::new(tcp))
        } else {
            Err(WireError::TlsUnsupported(config.ssl_mode))
        };
    }
    let tls = super::tls::client_config(config).map_err(WireError::Tls)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = rustls::pki_types::ServerName::try_from(config.host.clone())
        .map_err(|e| WireError::Tls(format!("invalid host name for TLS: {e}")))?;
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(WireError::TlsHandshake)?;
    Ok(Box::new(stream))
}

/// Quotes an identifier for SQL and replication commands (slot and publication names).
pub fn quote_ident(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// Quotes a string literal.
pub fn quote_literal(value: &str) -> String {
    postgres_protocol::escape::escape_literal(value)
}
