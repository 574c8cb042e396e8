//! The PROXY protocol on the wire: reading an outer load balancer's header
//! from a new connection, and the header sockgate sends to a backend.
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::proxy_protocol::{self, Parsed, ProxyHeader};
use crate::resources::policies::ProxyProtocolVersion;

/// Reads a PROXY header (v1 or v2) from `client`, within `limit`; the header and
/// the bytes that came after it (the start of the client's payload).
pub async fn read_header(client: &mut TcpStream, limit: Duration) -> io::Result<(ProxyHeader, Vec<u8>)> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            match proxy_protocol::parse(&buf) {
                Ok(Parsed::Header { header, consumed }) => return Ok((header, buf.split_off(consumed))),
                Ok(Parsed::Incomplete { at_most }) => {
                    // Never read past the header's longest possible end: what
                    // follows belongs to the payload and is read by the data path.
                    let want = at_most.saturating_sub(buf.len()).clamp(1, chunk.len());
                    let n = client.read(&mut chunk[..want]).await?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed before its PROXY header was complete"));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not a PROXY protocol header: {e:?}"))),
            }
        }
    };
    tokio::time::timeout(limit, read).await.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no PROXY header within {limit:?}")))?
}

/// The header telling a backend who the client is.
pub fn encode(version: ProxyProtocolVersion, client: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    match version {
        ProxyProtocolVersion::V1 => proxy_protocol::encode_v1(client, destination),
        ProxyProtocolVersion::V2 => proxy_protocol::encode_v2(client, destination),
    }
}
