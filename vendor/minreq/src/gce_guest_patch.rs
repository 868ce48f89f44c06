//! Tests of the gce-guest patch (see PATCHED.md beside Cargo.toml): replies cut short are
//! errors, and the header budget cannot wrap around. Each test serves one reply from a
//! thread on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

/// Serves `reply` to the first connection (after reading its request head), then closes,
/// or, with `endless_headers`, sends header lines until the client goes away.
fn serve(reply: Vec<u8>, endless_headers: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = conn.write_all(&reply);
        if endless_headers {
            // Bounded so a failing test ends: 256 MiB of header lines at most.
            for _ in 0..(16 << 20) {
                if conn.write_all(b"Y: zzzzzzzzzz\r\n").is_err() {
                    break;
                }
            }
        }
    });
    url
}

#[test]
fn a_body_shorter_than_its_content_length_is_an_error() {
    let url = serve(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nrm -rf /some/dir/".to_vec(),
        false,
    );
    assert!(crate::get(url).send().is_err());
}

#[test]
fn a_chunked_body_cut_between_chunks_is_an_error() {
    let url = serve(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11\r\nrm -rf /some/dir/\r\n".to_vec(),
        false,
    );
    assert!(crate::get(url).send().is_err());
}

#[test]
fn a_chunked_body_cut_inside_a_chunk_is_an_error() {
    let url = serve(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\nrm -rf /some/dir/".to_vec(),
        false,
    );
    assert!(crate::get(url).send().is_err());
}

#[test]
fn whole_bodies_still_arrive() {
    let url = serve(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_vec(),
        false,
    );
    assert_eq!(crate::get(url).send().unwrap().as_str().unwrap(), "hello world");
    let url = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(), false);
    assert_eq!(crate::get(url).send().unwrap().as_str().unwrap(), "hello");
}

#[test]
fn a_bare_lf_header_line_at_the_limit_cannot_lift_the_header_budget() {
    let mut reply = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    reply.extend(std::iter::repeat(b'a').take(8191 - 3));
    reply.push(b'\n');
    let url = serve(reply, true);
    match crate::get(url).send() {
        Err(crate::Error::HeadersOverflow) => {}
        other => panic!("expected HeadersOverflow, got {:?}", other.map(|r| r.status_code)),
    }
}
