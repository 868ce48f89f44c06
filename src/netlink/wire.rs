//! The rtnetlink wire format, pure: no system calls and no `unsafe`. Encodes and decodes
//! `nlmsghdr`, `rtmsg` and `rtattr` for `RTM_NEWROUTE`, `RTM_DELROUTE` and `RTM_GETROUTE`
//! dumps, and the control messages that answer them (`NLMSG_ERROR` as ack or error,
//! `NLMSG_DONE`, `NLMSG_NOOP`, `NLMSG_OVERRUN`).
//!
//! Layout (host byte order, which is little-endian on every target this crate builds for):
//! `nlmsghdr` = len u32, type u16, flags u16, seq u32, port u32 (16 bytes); `rtmsg` =
//! family, dst_len, src_len, tos, table, protocol, scope, type (u8 each) + flags u32 (12
//! bytes); `rtattr` = len u16 (header + payload, unpadded), type u16, payload, zero padding
//! to 4 bytes. Every message starts 4-byte aligned. Decoding never panics on any input (a
//! fuzz target checks it) and reports the first malformed length as a [`DecodeError`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Size of `struct nlmsghdr`.
pub(crate) const HEADER_LEN: usize = 16;
/// Size of `struct rtmsg`.
pub(crate) const RTMSG_LEN: usize = 12;
/// Size of `struct rtattr`.
pub(crate) const ATTR_HEADER_LEN: usize = 4;

/// Message types (`nlmsg_type`).
pub(crate) const NLMSG_NOOP: u16 = 1;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_OVERRUN: u16 = 4;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RTM_DELROUTE: u16 = 25;
pub(crate) const RTM_GETROUTE: u16 = 26;

/// Header flags (`nlmsg_flags`).
pub(crate) const NLM_F_REQUEST: u16 = 0x01;
#[cfg(test)]
pub(crate) const NLM_F_MULTI: u16 = 0x02;
pub(crate) const NLM_F_ACK: u16 = 0x04;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
#[cfg(test)]
pub(crate) const NLM_F_DUMP_FILTERED: u16 = 0x20;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
/// On an `NLMSG_ERROR`: only the request's header is echoed back.
pub(crate) const NLM_F_CAPPED: u16 = 0x100;
/// On an `NLMSG_ERROR`: extended-ack attributes follow the echoed request.
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;

/// Route attribute types (`rta_type`).
pub(crate) const RTA_DST: u16 = 1;
pub(crate) const RTA_OIF: u16 = 4;
pub(crate) const RTA_PREFSRC: u16 = 7;
pub(crate) const RTA_PRIORITY: u16 = 6;
pub(crate) const RTA_TABLE: u16 = 15;

/// Extended-ack attribute holding the kernel's error message.
pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;

/// Address families (`rtm_family`).
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// Routing tables, scopes, route types.
pub(crate) const RT_TABLE_UNSPEC: u8 = 0;
pub(crate) const RT_TABLE_LOCAL: u8 = 255;
pub(crate) const RT_SCOPE_UNIVERSE: u8 = 0;
pub(crate) const RT_SCOPE_HOST: u8 = 254;
pub(crate) const RTN_LOCAL: u8 = 2;

/// Rounds `len` up to the 4-byte boundary netlink aligns messages and attributes to.
pub(crate) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// The first malformed thing found in a datagram or message, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// What is wrong, worded for a log line.
    pub what: &'static str,
    /// Byte offset in the buffer that was being decoded.
    pub offset: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed netlink data at byte {}: {}",
            self.offset, self.what
        )
    }
}

fn error(what: &'static str, offset: usize) -> DecodeError {
    DecodeError { what, offset }
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at + 2)?;
    Some(u16::from_ne_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at + 4)?;
    Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// `struct nlmsghdr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Length of the message including this header (and its trailing padding).
    pub len: u32,
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// Sequence number, echoed by the kernel in replies.
    pub seq: u32,
    /// Port id: 0 on requests to the kernel, the requester's port on replies.
    pub port: u32,
}

impl Header {
    /// Decodes the header at the start of `data`.
    pub fn decode(data: &[u8]) -> Result<Header, DecodeError> {
        match (
            u32_at(data, 0),
            u16_at(data, 4),
            u16_at(data, 6),
            u32_at(data, 8),
            u32_at(data, 12),
        ) {
            (Some(len), Some(kind), Some(flags), Some(seq), Some(port)) => Ok(Header {
                len,
                kind,
                flags,
                seq,
                port,
            }),
            _ => Err(error("shorter than a message header", 0)),
        }
    }

    /// Appends the header's 16 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_ne_bytes());
        out.extend_from_slice(&self.kind.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&self.port.to_ne_bytes());
    }
}

/// Writes one netlink message: the header, a fixed part and attributes, with `nlmsg_len`
/// patched in by [`MessageBuilder::finish`] (padding of the last attribute included, as the
/// kernel and iproute2 count it).
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    /// Starts a message of type `kind`.
    pub fn new(kind: u16, flags: u16, seq: u32, port: u32) -> MessageBuilder {
        let mut buf = Vec::with_capacity(64);
        Header {
            len: 0,
            kind,
            flags,
            seq,
            port,
        }
        .encode(&mut buf);
        MessageBuilder { buf }
    }

    /// Appends raw bytes (a fixed-size struct), then pads to 4 bytes.
    pub fn bytes(&mut self, data: &[u8]) -> &mut MessageBuilder {
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// Appends one attribute: `rta_len` counts header and payload but not the padding.
    /// A payload too long for the 16-bit length is cut at the largest length that fits.
    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut MessageBuilder {
        let payload = &payload[..payload.len().min(u16::MAX as usize - ATTR_HEADER_LEN)];
        let len = (ATTR_HEADER_LEN + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// The finished message.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() as u32).to_ne_bytes();
        self.buf[..4].copy_from_slice(&len);
        self.buf
    }
}

/// The messages of one received datagram, in order: each its header and payload (the bytes
/// after the header up to `nlmsg_len`). Yields one error and stops at the first message
/// whose length is impossible, or at leftover bytes too short to be a message.
pub struct Messages<'a> {
    data: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Messages<'a> {
    /// Iterates over the messages in `datagram`.
    pub fn new(datagram: &'a [u8]) -> Messages<'a> {
        Messages {
            data: datagram,
            offset: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<(Header, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.data.len() {
            return None;
        }
        let at = self.offset;
        let rest = &self.data[at..];
        let outcome = match Header::decode(rest) {
            Err(_) => Err(error("leftover bytes after the last message", at)),
            Ok(header) if (header.len as usize) < HEADER_LEN => {
                Err(error("message length shorter than its header", at))
            }
            Ok(header) if header.len as usize > rest.len() => {
                Err(error("message length runs past the datagram", at))
            }
            Ok(header) => {
                let len = header.len as usize;
                self.offset = at.saturating_add(align4(len));
                Ok((header, &rest[HEADER_LEN..len]))
            }
        };
        self.failed = outcome.is_err();
        Some(outcome)
    }
}

/// The attributes in a run of `rtattr`s: each its type and payload. Yields one error and
/// stops at the first impossible length.
pub(crate) struct Attrs<'a> {
    data: &'a [u8],
    offset: usize,
    base: usize,
    failed: bool,
}

impl<'a> Attrs<'a> {
    /// Iterates over the attributes in `data`; `base` is `data`'s offset in the message, so
    /// errors say where in the message they are.
    pub fn new(data: &'a [u8], base: usize) -> Attrs<'a> {
        Attrs {
            data,
            offset: 0,
            base,
            failed: false,
        }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.data.len() {
            return None;
        }
        let at = self.offset;
        let rest = &self.data[at..];
        let outcome = match (u16_at(rest, 0), u16_at(rest, 2)) {
            (Some(len), Some(kind)) => {
                let len = len as usize;
                if len < ATTR_HEADER_LEN {
                    Err(error(
                        "attribute length shorter than its header",
                        self.base + at,
                    ))
                } else if len > rest.len() {
                    Err(error(
                        "attribute length runs past the message",
                        self.base + at,
                    ))
                } else {
                    self.offset = at + align4(len);
                    Ok((kind, &rest[ATTR_HEADER_LEN..len]))
                }
            }
            _ => Err(error(
                "leftover bytes after the last attribute",
                self.base + at,
            )),
        };
        self.failed = outcome.is_err();
        Some(outcome)
    }
}

/// One route attribute, the ones this crate reads by name and the rest kept as bytes (so a
/// decoded message encodes back to the same bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAttr {
    /// `RTA_DST`: the destination address.
    Dst(IpAddr),
    /// `RTA_OIF`: the output interface index.
    Oif(u32),
    /// `RTA_PRIORITY`: the metric.
    Priority(u32),
    /// `RTA_PREFSRC`: the preferred source address.
    PrefSrc(IpAddr),
    /// `RTA_TABLE`: the table id (tables above 255 only fit here).
    Table(u32),
    /// Any other attribute, as received.
    Other { kind: u16, payload: Vec<u8> },
}

/// `struct rtmsg` and its attributes: a route as `RTM_NEWROUTE`/`RTM_DELROUTE` carry it, in
/// requests and in dump replies alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMessage {
    pub family: u8,
    pub dst_len: u8,
    pub src_len: u8,
    pub tos: u8,
    /// `rtm_table`; see [`RouteMessage::table`] for the effective table.
    pub table: u8,
    pub protocol: u8,
    pub scope: u8,
    pub route_type: u8,
    pub flags: u32,
    /// Attributes in wire order.
    pub attrs: Vec<RouteAttr>,
}

fn address(family: u8, payload: &[u8], offset: usize) -> Result<IpAddr, DecodeError> {
    match (family, payload.len()) {
        (AF_INET, 4) => Ok(IpAddr::V4(Ipv4Addr::new(
            payload[0], payload[1], payload[2], payload[3],
        ))),
        (AF_INET6, 16) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(payload);
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => Err(error("address length does not match the family", offset)),
    }
}

fn address_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn u32_payload(payload: &[u8], offset: usize) -> Result<u32, DecodeError> {
    match payload {
        [a, b, c, d] => Ok(u32::from_ne_bytes([*a, *b, *c, *d])),
        _ => Err(error("a 32-bit attribute is not 4 bytes long", offset)),
    }
}

impl RouteMessage {
    /// A route with no attributes.
    pub fn new(family: u8) -> RouteMessage {
        RouteMessage {
            family,
            dst_len: 0,
            src_len: 0,
            tos: 0,
            table: RT_TABLE_UNSPEC,
            protocol: 0,
            scope: RT_SCOPE_UNIVERSE,
            route_type: 0,
            flags: 0,
            attrs: Vec::new(),
        }
    }

    /// Decodes the payload of a route message (what follows `nlmsghdr`). Address
    /// attributes must fit the family (for `AF_INET`/`AF_INET6`; other families keep them
    /// as bytes) and 32-bit ones must be 4 bytes.
    pub fn decode(payload: &[u8]) -> Result<RouteMessage, DecodeError> {
        let Some(fixed) = payload.get(..RTMSG_LEN) else {
            return Err(error("route message shorter than struct rtmsg", HEADER_LEN));
        };
        let mut route = RouteMessage {
            family: fixed[0],
            dst_len: fixed[1],
            src_len: fixed[2],
            tos: fixed[3],
            table: fixed[4],
            protocol: fixed[5],
            scope: fixed[6],
            route_type: fixed[7],
            flags: u32::from_ne_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
            attrs: Vec::new(),
        };
        let ip_family = route.family == AF_INET || route.family == AF_INET6;
        let base = HEADER_LEN + RTMSG_LEN;
        let mut offset = base;
        for attr in Attrs::new(&payload[RTMSG_LEN..], base) {
            let (kind, data) = attr?;
            let decoded = match kind {
                RTA_DST if ip_family => RouteAttr::Dst(address(route.family, data, offset)?),
                RTA_PREFSRC if ip_family => {
                    RouteAttr::PrefSrc(address(route.family, data, offset)?)
                }
                RTA_OIF => RouteAttr::Oif(u32_payload(data, offset)?),
                RTA_PRIORITY => RouteAttr::Priority(u32_payload(data, offset)?),
                RTA_TABLE => RouteAttr::Table(u32_payload(data, offset)?),
                _ => RouteAttr::Other {
                    kind,
                    payload: data.to_vec(),
                },
            };
            route.attrs.push(decoded);
            offset += align4(ATTR_HEADER_LEN + data.len());
        }
        Ok(route)
    }

    /// Appends `struct rtmsg` and the attributes to a message being built.
    pub fn encode(&self, message: &mut MessageBuilder) {
        let mut fixed = [0u8; RTMSG_LEN];
        fixed[..8].copy_from_slice(&[
            self.family,
            self.dst_len,
            self.src_len,
            self.tos,
            self.table,
            self.protocol,
            self.scope,
            self.route_type,
        ]);
        fixed[8..].copy_from_slice(&self.flags.to_ne_bytes());
        message.bytes(&fixed);
        for attr in &self.attrs {
            match attr {
                RouteAttr::Dst(addr) => message.attr(RTA_DST, &address_bytes(addr)),
                RouteAttr::PrefSrc(addr) => message.attr(RTA_PREFSRC, &address_bytes(addr)),
                RouteAttr::Oif(index) => message.attr(RTA_OIF, &index.to_ne_bytes()),
                RouteAttr::Priority(metric) => message.attr(RTA_PRIORITY, &metric.to_ne_bytes()),
                RouteAttr::Table(table) => message.attr(RTA_TABLE, &table.to_ne_bytes()),
                RouteAttr::Other { kind, payload } => message.attr(*kind, payload),
            };
        }
    }

    /// A whole message carrying this route.
    pub fn to_message(&self, kind: u16, flags: u16, seq: u32, port: u32) -> Vec<u8> {
        let mut message = MessageBuilder::new(kind, flags, seq, port);
        self.encode(&mut message);
        message.finish()
    }

    /// The destination address (`RTA_DST`), if the route has one (a default route has none).
    pub fn dst(&self) -> Option<IpAddr> {
        self.attrs.iter().find_map(|a| match a {
            RouteAttr::Dst(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The output interface (`RTA_OIF`).
    pub fn oif(&self) -> Option<u32> {
        self.attrs.iter().find_map(|a| match a {
            RouteAttr::Oif(index) => Some(*index),
            _ => None,
        })
    }

    /// The table: `RTA_TABLE` when present (the kernel always sends it, and tables above
    /// 255 exist only there), else `rtm_table`.
    pub fn table(&self) -> u32 {
        self.attrs
            .iter()
            .find_map(|a| match a {
                RouteAttr::Table(table) => Some(*table),
                _ => None,
            })
            .unwrap_or(self.table as u32)
    }
}

/// What a received message means to a requester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelReply<'a> {
    /// `NLMSG_ERROR` with error 0: the request succeeded.
    Ack,
    /// `NLMSG_ERROR` with an error: `errno` (positive) and the extended-ack message, if any.
    Error { errno: i32, message: Option<String> },
    /// `NLMSG_DONE`: the end of a dump; `errno` is non-zero when the dump failed.
    Done { errno: i32 },
    /// `NLMSG_NOOP`: nothing; skip it.
    Noop,
    /// `NLMSG_OVERRUN`: data was lost.
    Overrun,
    /// Anything else (a route of a dump): its type and payload.
    Data { kind: u16, payload: &'a [u8] },
}

/// Turns a negative kernel error into a positive errno (an odd positive one is kept).
fn errno_of(raw: i32) -> i32 {
    raw.checked_neg().unwrap_or(i32::MAX).abs()
}

/// Reads the extended-ack message out of an `NLMSG_ERROR` payload, if it carries one.
fn ext_ack_message(header: &Header, payload: &[u8]) -> Option<String> {
    if header.flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed_len = if header.flags & NLM_F_CAPPED != 0 {
        HEADER_LEN
    } else {
        align4(u32_at(payload, 4)? as usize)
    };
    let tlvs = payload.get(4usize.checked_add(echoed_len)?..)?;
    Attrs::new(tlvs, 0)
        .map_while(Result::ok)
        .find_map(|(kind, data)| {
            (kind == NLMSGERR_ATTR_MSG).then(|| {
                let text = data.split(|&b| b == 0).next().unwrap_or_default();
                String::from_utf8_lossy(text).into_owned()
            })
        })
}

/// Classifies one message of a reply.
pub fn classify<'a>(header: &Header, payload: &'a [u8]) -> Result<KernelReply<'a>, DecodeError> {
    match header.kind {
        NLMSG_ERROR => {
            // struct nlmsgerr: int error, then (at least the header of) the request.
            if payload.len() < 4 + HEADER_LEN {
                return Err(error(
                    "error message shorter than struct nlmsgerr",
                    HEADER_LEN,
                ));
            }
            let raw = u32_at(payload, 0).unwrap_or(0) as i32;
            if raw == 0 {
                Ok(KernelReply::Ack)
            } else {
                Ok(KernelReply::Error {
                    errno: errno_of(raw),
                    message: ext_ack_message(header, payload),
                })
            }
        }
        NLMSG_DONE => {
            // Old kernels send an empty payload; newer ones an int, negative on failure.
            let raw = u32_at(payload, 0).unwrap_or(0) as i32;
            Ok(KernelReply::Done {
                errno: if raw < 0 { errno_of(raw) } else { 0 },
            })
        }
        NLMSG_NOOP => Ok(KernelReply::Noop),
        NLMSG_OVERRUN => Ok(KernelReply::Overrun),
        kind => Ok(KernelReply::Data { kind, payload }),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! The byte fixtures in `tests/data/netlink/`, captured from iproute2 by `capture.sh`.

    /// One captured datagram: `true` when iproute2 sent it, `false` when it received it.
    pub(crate) type Datagram = (bool, Vec<u8>);

    /// Parses a fixture file: `#` comments, then `send`/`recv` lines each followed by hex.
    pub fn parse(text: &str) -> Vec<Datagram> {
        let mut out: Vec<Datagram> = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            match line {
                "send" => out.push((true, Vec::new())),
                "recv" => out.push((false, Vec::new())),
                hex => {
                    let last = out.last_mut().expect("hex before send/recv");
                    for byte in hex.split_whitespace() {
                        last.1.push(u8::from_str_radix(byte, 16).expect("hex byte"));
                    }
                }
            }
        }
        out
    }

    macro_rules! fixture {
        ($name:literal) => {
            $crate::netlink::wire::fixtures::parse(include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/netlink/",
                $name,
                ".hex"
            )))
        };
    }
    pub(crate) use fixture;
}

#[cfg(test)]
mod tests {
    use super::fixtures::fixture;
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// The route `ip route add to local 10.9.9.9/32 dev vg0 proto 66 table local` sends.
    fn local_route(dst: IpAddr, dst_len: u8, scope: u8) -> RouteMessage {
        RouteMessage {
            family: if dst.is_ipv4() { AF_INET } else { AF_INET6 },
            dst_len,
            table: RT_TABLE_LOCAL,
            protocol: 66,
            scope,
            route_type: RTN_LOCAL,
            attrs: vec![RouteAttr::Dst(dst), RouteAttr::Oif(3)],
            ..RouteMessage::new(0)
        }
    }

    fn only_message(datagram: &[u8]) -> (Header, &[u8]) {
        let all: Vec<_> = Messages::new(datagram).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 1);
        all[0]
    }

    #[test]
    fn requests_encode_to_the_bytes_iproute2_sends() {
        let v6: IpAddr = "2001:db8::9".parse().unwrap();
        let cases = [
            (
                fixture!("add_v4"),
                RTM_NEWROUTE,
                local_route(v4(10, 9, 9, 9), 32, RT_SCOPE_HOST),
            ),
            (
                fixture!("add_alias"),
                RTM_NEWROUTE,
                local_route(v4(10, 200, 0, 0), 28, RT_SCOPE_HOST),
            ),
            // iproute2 leaves IPv6 routes at scope universe; the kernel reports them so too.
            (
                fixture!("add_v6"),
                RTM_NEWROUTE,
                local_route(v6, 128, RT_SCOPE_UNIVERSE),
            ),
            (
                fixture!("del_v4"),
                RTM_DELROUTE,
                local_route(v4(10, 9, 9, 9), 32, RT_SCOPE_HOST),
            ),
        ];
        for (datagrams, kind, route) in cases {
            let (sent, request) = &datagrams[0];
            assert!(sent);
            let (header, payload) = only_message(request);
            let flags = if kind == RTM_NEWROUTE {
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE
            } else {
                NLM_F_REQUEST | NLM_F_ACK
            };
            assert_eq!(
                header,
                Header {
                    len: request.len() as u32,
                    kind,
                    flags,
                    seq: header.seq,
                    port: 0
                }
            );
            assert_eq!(
                &route.to_message(kind, flags, header.seq, 0),
                request,
                "encode {:?}",
                route
            );
            assert_eq!(RouteMessage::decode(payload).unwrap(), route, "decode");
        }
    }

    #[test]
    fn dump_requests_encode_like_iproute2_with_the_table_as_an_attribute() {
        for (datagrams, family) in [
            (fixture!("dump_v4_proto66"), AF_INET),
            (fixture!("dump_v6_proto66"), AF_INET6),
        ] {
            let (sent, request) = &datagrams[0];
            assert!(sent);
            let (header, payload) = only_message(request);
            assert_eq!(header.flags, NLM_F_REQUEST | NLM_F_DUMP);
            let expected = RouteMessage {
                protocol: 66,
                attrs: vec![RouteAttr::Table(RT_TABLE_LOCAL as u32)],
                ..RouteMessage::new(family)
            };
            assert_eq!(RouteMessage::decode(payload).unwrap(), expected);
            assert_eq!(
                &expected.to_message(RTM_GETROUTE, header.flags, header.seq, 0),
                request
            );
        }
    }

    #[test]
    fn acks_and_errors_decode_and_reencode() {
        for (name, datagrams, expected) in [
            ("add_v4", fixture!("add_v4"), KernelReply::Ack),
            ("del_v4", fixture!("del_v4"), KernelReply::Ack),
            ("add_v6", fixture!("add_v6"), KernelReply::Ack),
            (
                "add_v4_exists",
                fixture!("add_v4_exists"),
                KernelReply::Error {
                    errno: libc::EEXIST,
                    message: None,
                },
            ),
            (
                "del_v4_missing",
                fixture!("del_v4_missing"),
                KernelReply::Error {
                    errno: libc::ESRCH,
                    message: None,
                },
            ),
        ] {
            let request = &datagrams[0].1;
            let (received, reply) = &datagrams[1];
            assert!(!received);
            let (header, payload) = only_message(reply);
            assert_eq!(header.kind, NLMSG_ERROR, "{}", name);
            assert_eq!(header.seq, Header::decode(request).unwrap().seq, "{}", name);
            assert_ne!(
                header.port, 0,
                "{}: the kernel addresses replies to our port",
                name
            );
            assert_eq!(classify(&header, payload).unwrap(), expected, "{}", name);
            // The other direction: an ack echoes the request header only (NLM_F_CAPPED);
            // an error echoes the whole request.
            let (flags, echoed) = if expected == KernelReply::Ack {
                (NLM_F_CAPPED, &request[..HEADER_LEN])
            } else {
                (0, &request[..])
            };
            let errno = match expected {
                KernelReply::Error { errno, .. } => -errno,
                _ => 0,
            };
            let mut message = MessageBuilder::new(NLMSG_ERROR, flags, header.seq, header.port);
            message.bytes(&errno.to_ne_bytes()).bytes(echoed);
            assert_eq!(&message.finish(), reply, "{}", name);
        }
    }

    /// Every route in a captured dump decodes, and encodes back to the same bytes.
    fn dump_routes(datagrams: &[(bool, Vec<u8>)]) -> (Vec<RouteMessage>, Vec<Header>) {
        let mut routes = Vec::new();
        let mut headers = Vec::new();
        for (sent, datagram) in datagrams.iter().skip(1) {
            assert!(!sent);
            for message in Messages::new(datagram) {
                let (header, payload) = message.unwrap();
                headers.push(header);
                if header.kind == RTM_NEWROUTE {
                    let route = RouteMessage::decode(payload).unwrap();
                    let again =
                        route.to_message(header.kind, header.flags, header.seq, header.port);
                    let start = payload.as_ptr() as usize - datagram.as_ptr() as usize - HEADER_LEN;
                    assert_eq!(
                        &datagram[start..start + header.len as usize],
                        &again[..],
                        "{:?}",
                        route
                    );
                    routes.push(route);
                }
            }
        }
        (routes, headers)
    }

    #[test]
    fn dump_replies_decode_and_prefer_rta_table() {
        let (routes, headers) = dump_routes(&fixture!("dump_v4_proto66"));
        let summary: Vec<_> = routes
            .iter()
            .map(|r| {
                (
                    r.dst(),
                    r.dst_len,
                    r.table(),
                    r.protocol,
                    r.scope,
                    r.route_type,
                    r.oif(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    Some(v4(10, 9, 9, 9)),
                    32,
                    255,
                    66,
                    RT_SCOPE_HOST,
                    RTN_LOCAL,
                    Some(3)
                ),
                (
                    Some(v4(10, 200, 0, 0)),
                    28,
                    255,
                    66,
                    RT_SCOPE_HOST,
                    RTN_LOCAL,
                    Some(3)
                ),
            ]
        );
        assert!(headers[..2]
            .iter()
            .all(|h| h.flags == NLM_F_MULTI | NLM_F_DUMP_FILTERED));
        let done = headers.last().unwrap();
        assert_eq!(done.kind, NLMSG_DONE);
        assert_eq!(
            classify(done, &[0, 0, 0, 0]).unwrap(),
            KernelReply::Done { errno: 0 }
        );

        // Unfiltered: kernel routes (with RTA_PREFSRC) and another protocol's route decode too.
        let (routes, _) = dump_routes(&fixture!("dump_v4_local"));
        let protocols: Vec<u8> = routes.iter().map(|r| r.protocol).collect();
        assert_eq!(protocols, [4, 66, 2, 2, 66, 2, 2, 2]);
        assert!(routes.iter().all(|r| r.table() == 255));

        let (routes, _) = dump_routes(&fixture!("dump_v6_proto66"));
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].dst(), Some("2001:db8::9".parse().unwrap()));
        assert_eq!(
            (routes[0].dst_len, routes[0].table(), routes[0].oif()),
            (128, 255, Some(3))
        );
        assert!(routes[0].attrs.contains(&RouteAttr::Priority(1024)));
    }

    #[test]
    fn rta_table_wins_over_rtm_table() {
        let mut route = RouteMessage::new(AF_INET);
        route.table = 252;
        assert_eq!(route.table(), 252);
        route.attrs.push(RouteAttr::Table(1000));
        assert_eq!(route.table(), 1000);
    }

    #[test]
    fn attributes_are_padded_but_their_length_is_not() {
        let mut message = MessageBuilder::new(RTM_NEWROUTE, NLM_F_REQUEST, 1, 0);
        message.attr(0x99, &[7]);
        let bytes = message.finish();
        assert_eq!(bytes.len(), HEADER_LEN + 8);
        assert_eq!(&bytes[..4], &24u32.to_ne_bytes());
        assert_eq!(&bytes[HEADER_LEN..], &[5, 0, 0x99, 0, 7, 0, 0, 0]);
    }

    #[test]
    fn malformed_datagrams_give_one_error_then_stop() {
        let ack = fixture!("add_v4")[1].1.clone();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (ack[..10].to_vec(), "leftover bytes after the last message"),
            (
                {
                    let mut d = ack.clone();
                    d[0] = 8;
                    d
                },
                "message length shorter than its header",
            ),
            (
                {
                    let mut d = ack.clone();
                    d[0] = 200;
                    d
                },
                "message length runs past the datagram",
            ),
            (
                {
                    let mut d = ack.clone();
                    d.extend_from_slice(&[1, 2, 3]);
                    d
                },
                "leftover bytes after the last message",
            ),
        ];
        for (datagram, what) in cases {
            let results: Vec<_> = Messages::new(&datagram).collect();
            let last = results.last().unwrap();
            assert_eq!(last.as_ref().map(|_| ()).unwrap_err().what, what);
            assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        }
        assert_eq!(Messages::new(&[]).count(), 0);
    }

    #[test]
    fn malformed_routes_are_errors_not_panics() {
        let good =
            local_route(v4(10, 9, 9, 9), 32, RT_SCOPE_HOST).to_message(RTM_NEWROUTE, 0, 1, 0);
        let payload = &good[HEADER_LEN..];
        assert!(RouteMessage::decode(&payload[..RTMSG_LEN - 1]).is_err());
        let mut short_dst = payload.to_vec();
        short_dst[RTMSG_LEN] = 7; // RTA_DST length 7: 3 address bytes
        assert_eq!(
            RouteMessage::decode(&short_dst).unwrap_err().what,
            "address length does not match the family"
        );
        let mut long_attr = payload.to_vec();
        long_attr[RTMSG_LEN] = 200;
        assert_eq!(
            RouteMessage::decode(&long_attr).unwrap_err().what,
            "attribute length runs past the message"
        );
        let mut bad_oif = payload.to_vec();
        bad_oif[RTMSG_LEN + 8] = 6; // RTA_OIF length 6
        assert!(RouteMessage::decode(&bad_oif).is_err());
        // A family we do not know keeps its addresses as bytes.
        let mut other_family = payload.to_vec();
        other_family[0] = 28; // AF_MPLS
        let route = RouteMessage::decode(&other_family).unwrap();
        assert_eq!(route.dst(), None);
    }

    #[test]
    fn control_messages_classify() {
        let header = |kind, flags| Header {
            len: 0,
            kind,
            flags,
            seq: 1,
            port: 1,
        };
        assert_eq!(
            classify(&header(NLMSG_DONE, NLM_F_MULTI), &[]).unwrap(),
            KernelReply::Done { errno: 0 }
        );
        let minus_enobufs = (-libc::ENOBUFS).to_ne_bytes();
        assert_eq!(
            classify(&header(NLMSG_DONE, 0), &minus_enobufs).unwrap(),
            KernelReply::Done {
                errno: libc::ENOBUFS
            }
        );
        assert_eq!(
            classify(&header(NLMSG_NOOP, 0), &[]).unwrap(),
            KernelReply::Noop
        );
        assert_eq!(
            classify(&header(NLMSG_OVERRUN, 0), &[]).unwrap(),
            KernelReply::Overrun
        );
        assert!(classify(&header(NLMSG_ERROR, 0), &[0; 8]).is_err());
        let mut weird = i32::MIN.to_ne_bytes().to_vec();
        weird.extend_from_slice(&[0; HEADER_LEN]);
        assert!(
            matches!(classify(&header(NLMSG_ERROR, 0), &weird).unwrap(), KernelReply::Error { errno, .. } if errno > 0)
        );
    }

    #[test]
    fn extended_ack_messages_are_read() {
        let request = local_route(v4(10, 9, 9, 9), 33, RT_SCOPE_HOST).to_message(
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK,
            9,
            0,
        );
        let mut message = MessageBuilder::new(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 9, 77);
        message
            .bytes(&(-libc::EINVAL).to_ne_bytes())
            .bytes(&request[..HEADER_LEN])
            .attr(NLMSGERR_ATTR_MSG, b"Invalid prefix length\0");
        let reply = message.finish();
        let (header, payload) = only_message(&reply);
        assert_eq!(
            classify(&header, payload).unwrap(),
            KernelReply::Error {
                errno: libc::EINVAL,
                message: Some("Invalid prefix length".into())
            }
        );
        // Uncapped: the whole request is echoed before the attributes.
        let mut message = MessageBuilder::new(NLMSG_ERROR, NLM_F_ACK_TLVS, 9, 77);
        message
            .bytes(&(-libc::EINVAL).to_ne_bytes())
            .bytes(&request)
            .attr(NLMSGERR_ATTR_MSG, b"bad\0");
        let reply = message.finish();
        let (header, payload) = only_message(&reply);
        assert_eq!(
            classify(&header, payload).unwrap(),
            KernelReply::Error {
                errno: libc::EINVAL,
                message: Some("bad".into())
            }
        );
    }
}
