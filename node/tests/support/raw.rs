//! A minimal HTTP/1.1 and WebSocket client over one TCP connection from a chosen loopback
//! source address: the RPC limits are per client address, and jsonrpsee's clients cannot
//! choose theirs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `http://127.0.0.1:PORT` → the socket address.
pub fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// A TCP connection to `to` from `from` (any 127.0.0.0/8 address works on Linux loopback).
pub async fn connect(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// As [`connect`], with a small receive buffer: a client that stops reading fills it soon.
pub async fn connect_small(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

pub struct Http {
    pub stream: TcpStream,
    host: String,
    pub token: Option<String>,
    buf: Vec<u8>,
}

impl Http {
    pub async fn open(from: IpAddr, to: SocketAddr) -> std::io::Result<Http> {
        Ok(Http {
            stream: connect(from, to).await?,
            host: to.to_string(),
            token: None,
            buf: Vec::new(),
        })
    }

    /// POSTs `body`; returns the status and the body (keep-alive: the connection is reused).
    pub async fn post(&mut self, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).await?;
        self.read_response().await
    }

    /// A JSON-RPC call; the parsed response object.
    pub async fn call(&mut self, method: &str, params: Value) -> std::io::Result<Value> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (_, out) = self.post(body.to_string().as_bytes()).await?;
        serde_json::from_slice(&out).map_err(std::io::Error::other)
    }

    async fn read_response(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + length {
                    self.fill().await?;
                }
                let body = self.buf[end + 4..end + 4 + length].to_vec();
                self.buf.drain(..end + 4 + length);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Opens a WebSocket on `stream` and sends one text message (masked with a zero key, which
/// leaves the payload as is). Reads only the handshake's answer.
pub async fn websocket_send(stream: &mut TcpStream, host: &str, text: &str) -> std::io::Result<()> {
    let handshake = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await?;
    let mut head = Vec::new();
    while find(&head, b"\r\n\r\n").is_none() {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(format!("no upgrade: {head}")));
    }
    websocket_send_more(stream, text).await
}

/// Sends one more text message on a WebSocket opened by [`websocket_send`].
pub async fn websocket_send_more(stream: &mut TcpStream, text: &str) -> std::io::Result<()> {
    let payload = text.as_bytes();
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await
}

/// Reads from `stream` until `needle` appears or `limit` passes; whether it appeared.
pub async fn read_until(stream: &mut TcpStream, needle: &[u8], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {
                tail.extend_from_slice(&chunk[..n]);
                if find(&tail, needle).is_some() {
                    return true;
                }
                let keep = tail.len().saturating_sub(needle.len());
                tail.drain(..keep);
            }
            _ => return false,
        }
    }
}
