//! An HTTP echo backend in the manner of the Gateway API conformance
//! echoserver (`echo-basic`) the TCP Routing guide deploys: it answers every
//! request with JSON naming the request and the pod, namespace and service
//! that served it, so a client can tell which backend it reached.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use serde::{Deserialize, Serialize};

/// Who this backend is (echo-basic reads the same from POD_NAME, NAMESPACE, SERVICE_NAME).
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub pod: String,
    pub namespace: String,
    pub service: String,
}

/// The JSON body of every answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EchoResponse {
    pub path: String,
    pub host: String,
    pub method: String,
    pub proto: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
}

/// Serves forever, a thread per connection.
pub fn serve(listener: TcpListener, identity: Identity) {
    for stream in listener.incoming().flatten() {
        let identity = identity.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &identity);
        });
    }
}

struct Request {
    method: String,
    path: String,
    proto: String,
    host: String,
    headers: BTreeMap<String, Vec<String>>,
    keep_alive: bool,
}

fn handle(stream: TcpStream, identity: &Identity) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    // Requests on one connection until the client closes or asks to.
    while let Some(request) = read_request(&mut reader)? {
        let response = EchoResponse {
            path: request.path,
            host: request.host,
            method: request.method,
            proto: request.proto,
            headers: request.headers,
            namespace: identity.namespace.clone(),
            ingress: String::new(),
            service: identity.service.clone(),
            pod: identity.pod.clone(),
        };
        let body = to_json(&response);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nDate: {}\r\nContent-Length: {}\r\n\r\n",
            http_date(),
            body.len()
        );
        writer.write_all(head.as_bytes())?;
        writer.write_all(body.as_bytes())?;
        if !request.keep_alive {
            break;
        }
    }
    Ok(())
}

/// JSON with one-space indentation, as echo-basic prints it.
fn to_json(response: &EchoResponse) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    response.serialize(&mut serializer).expect("serializing to memory");
    String::from_utf8(out).expect("JSON is UTF-8")
}

fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(proto)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(None); // not HTTP: nothing to answer
    };
    let (method, path, proto) = (method.to_string(), path.to_string(), proto.to_string());
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut host = String::new();
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { continue };
        let (name, value) = (canonical(name.trim()), value.trim().to_string());
        match name.as_str() {
            // Go's server takes Host out of the header map, and so does echo-basic.
            "Host" => host = value,
            _ => {
                if name == "Content-Length" {
                    content_length = value.parse().unwrap_or(0);
                }
                headers.entry(name).or_default().push(value);
            }
        }
    }
    // Drain a body so the next request on the connection starts clean.
    std::io::copy(&mut reader.take(content_length as u64), &mut std::io::sink())?;
    let close = headers.get("Connection").is_some_and(|v| v.iter().any(|c| c.eq_ignore_ascii_case("close")));
    let keep_alive = proto == "HTTP/1.1" && !close;
    Ok(Some(Request { method, path, proto, host, headers, keep_alive }))
}

/// "user-agent" → "User-Agent", as Go canonicalizes header names.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// RFC 7231 date, e.g. "Tue, 03 Jan 2023 10:18:36 GMT".
fn http_date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month_name = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][(month - 1) as usize];
    format!("{weekday}, {day:02} {month_name} {year} {h:02}:{m:02}:{s:02} GMT")
}

/// Starts the `sockgate-echo` binary on port 3000 of `host` as pod `pod` of
/// Service `service` (namespace default), and waits until it listens.
pub fn start(host: &crate::netns::NetNs, service: &str, pod: &str, logs: &std::path::Path) -> anyhow::Result<crate::agent::Process> {
    let mut cmd = host.command(crate::workspace_bin("sockgate-echo")?);
    cmd.args(["--listen", "0.0.0.0:3000"]).env("SERVICE_NAME", service).env("POD_NAME", pod).env("NAMESPACE", "default");
    let mut process = crate::agent::Process::spawn(&format!("echo-{service}"), cmd, logs)?;
    crate::agent::wait_for_port(host, "127.0.0.1:3000".parse()?, std::time::Duration::from_secs(10))?;
    process.ensure_running()?;
    Ok(process)
}

/// Sends one GET over `stream` and parses the echo (for tests).
pub fn get(stream: &mut TcpStream, host: &str) -> anyhow::Result<(String, EchoResponse)> {
    write!(stream, "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sockgate-test\r\nAccept: */*\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no HTTP head in {raw:?}"))?;
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, serde_json::from_str(body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_canonicalized_like_go() {
        assert_eq!(canonical("user-agent"), "User-Agent");
        assert_eq!(canonical("ACCEPT"), "Accept");
        assert_eq!(canonical("x-forwarded-for"), "X-Forwarded-For");
    }

    #[test]
    fn http_date_has_the_rfc_7231_shape() {
        let d = http_date();
        assert!(d.ends_with(" GMT") && d.len() == 29, "{d}");
    }

    #[test]
    fn echo_answers_a_request_with_its_identity_over_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let identity = Identity { pod: "p".into(), namespace: "ns".into(), service: "svc".into() };
        std::thread::spawn(move || serve(listener, identity));
        let mut stream = TcpStream::connect(addr).unwrap();
        let (status, echo) = get(&mut stream, "example:8088").unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!((echo.service.as_str(), echo.pod.as_str(), echo.namespace.as_str()), ("svc", "p", "ns"));
        assert_eq!((echo.host.as_str(), echo.method.as_str(), echo.path.as_str()), ("example:8088", "GET", "/"));
        assert_eq!(echo.headers["User-Agent"], vec!["sockgate-test".to_string()]);
    }
}
