//! Talking to the kernel: [`RouteSocket`], a raw `NETLINK_ROUTE` socket (open, bind, send,
//! receive, through the wrappers of `crate::sys`), and [`Netlink`], which runs requests
//! over any [`Transport`]: it numbers them (never 0, increasing), waits for the ack of every
//! change, collects dumps until `NLMSG_DONE`, and accepts only messages the kernel (sender
//! port 0) addressed to our port id with the sequence number we are waiting for — stale
//! replies of an abandoned request are skipped, not mistaken for the current one.
//!
//! Tests drive [`Netlink`] through a scripted fake transport (error and multipart paths),
//! and [`RouteSocket`] through a real kernel in a private network namespace.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::wire::{self, classify, DecodeError, Header, KernelReply, Messages, NLM_F_DUMP_INTR};
use crate::sys;

/// Receive buffer size: twice the 32 KiB the kernel's netlink documentation recommends for
/// dumps (the kernel never builds a dump datagram larger than 32 KiB, and acks are small),
/// so datagrams are read in one call each, without measuring them first. A datagram that
/// did not fit anyway is reported (`MSG_TRUNC`), never used cut short.
pub(crate) const RECV_BUFFER: usize = 64 * 1024;
/// How long a reply may take before the request fails (the kernel answers at once).
pub(crate) const REPLY_TIMEOUT_SECS: i64 = 5;

/// `SOL_NETLINK` socket options (from `linux/netlink.h`).
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;

/// Why a netlink request failed.
#[derive(Debug)]
pub enum NetlinkError {
    /// The kernel refused it: a positive errno and, with extended acks, its message.
    Kernel { errno: i32, message: Option<String> },
    /// A system call on the socket failed (or timed out).
    Io { op: &'static str, source: io::Error },
    /// A reply could not be decoded.
    Malformed(DecodeError),
    /// The kernel said messages were lost (`NLMSG_OVERRUN`).
    Overrun,
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn kernel_errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Into the crate's error, naming the operation (`"add a local route"`).
    pub(crate) fn into_error(self, op: &'static str) -> crate::Error {
        match self {
            NetlinkError::Kernel { errno, .. } => {
                crate::Error::sys(op, io::Error::from_raw_os_error(errno))
            }
            NetlinkError::Io { source, .. } => crate::Error::sys(op, source),
            other => crate::Error::Msg(format!("failed to {}: {}", op, other)),
        }
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkError::Kernel {
                errno,
                message: Some(m),
            } => {
                write!(f, "{} ({})", io::Error::from_raw_os_error(*errno), m)
            }
            NetlinkError::Kernel {
                errno,
                message: None,
            } => write!(f, "{}", io::Error::from_raw_os_error(*errno)),
            NetlinkError::Io { op, source } => write!(f, "failed to {}: {}", op, source),
            NetlinkError::Malformed(e) => write!(f, "{}", e),
            NetlinkError::Overrun => f.write_str("the kernel dropped netlink messages (overrun)"),
        }
    }
}

impl From<DecodeError> for NetlinkError {
    fn from(e: DecodeError) -> NetlinkError {
        NetlinkError::Malformed(e)
    }
}

/// Where messages go and come from: the kernel ([`RouteSocket`]) or a test's script.
pub trait Transport {
    /// Our port id (`nl_pid` the kernel assigned at bind time).
    fn port_id(&self) -> u32;
    /// Sends one datagram to the kernel.
    fn send(&mut self, datagram: &[u8]) -> io::Result<()>;
    /// Receives one datagram into `buf` (resized to fit it) and returns the sender's port
    /// id (0 for the kernel).
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<u32>;
}

/// A raw `NETLINK_ROUTE` socket bound to a port the kernel picked. Not shared between
/// threads: each daemon thread opens its own.
#[derive(Debug)]
pub struct RouteSocket {
    fd: OwnedFd,
    port_id: u32,
}

impl RouteSocket {
    /// Opens and binds the socket: 32 KiB send and 1 MiB receive buffers, extended acks and
    /// strict dump checking when the kernel has them (older kernels just filter less), and
    /// a receive timeout so a request can never hang a daemon.
    pub fn open() -> Result<RouteSocket, NetlinkError> {
        let io_error = |op| move |source| NetlinkError::Io { op, source };
        let fd = sys::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
        .map_err(io_error("open a netlink socket"))?;
        let mut socket = RouteSocket { fd, port_id: 0 };
        socket.set_option(libc::SOL_SOCKET, libc::SO_SNDBUF, 32 * 1024);
        socket.set_option(libc::SOL_SOCKET, libc::SO_RCVBUF, 1024 * 1024);
        socket.set_option(SOL_NETLINK, NETLINK_EXT_ACK, 1);
        socket.set_option(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
        let timeout = libc::timeval {
            tv_sec: REPLY_TIMEOUT_SECS as _,
            tv_usec: 0,
        };
        sys::setsockopt(
            socket.fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout,
        )
        .map_err(io_error("set the netlink receive timeout"))?;
        sys::bind_netlink(socket.fd.as_fd(), &sys::netlink_address())
            .map_err(io_error("bind the netlink socket"))?;
        let assigned = sys::netlink_name(socket.fd.as_fd())
            .map_err(io_error("read the netlink port id"))?
            .ok_or_else(|| NetlinkError::Io {
                op: "read the netlink port id",
                source: io::Error::new(io::ErrorKind::InvalidData, "unexpected address"),
            })?;
        socket.port_id = assigned.nl_pid;
        Ok(socket)
    }

    /// Sets an integer socket option; failures are ignored (old kernels lack some).
    fn set_option(&mut self, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
        if let Err(e) = sys::setsockopt(self.fd.as_fd(), level, name, &value) {
            debug!("netlink socket option {}/{} not set: {}", level, name, e);
        }
    }
}

impl Transport for RouteSocket {
    fn port_id(&self) -> u32 {
        self.port_id
    }

    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        let kernel = sys::netlink_address();
        loop {
            match sys::sendto_netlink(self.fd.as_fd(), datagram, &kernel) {
                Ok(sent) if sent != datagram.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "short netlink send",
                    ))
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<u32> {
        buf.clear();
        buf.reserve(RECV_BUFFER);
        let room = buf.capacity();
        loop {
            let (got, sender) = match sys::recvfrom_netlink(self.fd.as_fd(), buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // With MSG_TRUNC the result is the datagram's full length, even if cut.
            if got > room {
                buf.clear();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "netlink datagram larger than the receive buffer",
                ));
            }
            return Ok(sender);
        }
    }
}

/// What a dump ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpStatus {
    /// `NLM_F_DUMP_INTR` was set: the table changed while it was dumped, so the result may
    /// be inconsistent and should be dumped again.
    pub interrupted: bool,
}

enum Flow {
    More,
    Finished,
}

/// Requests over a [`Transport`], matched to their replies.
pub struct Netlink<T: Transport> {
    transport: T,
    last_seq: u32,
    buf: Vec<u8>,
    /// Messages skipped as not ours (another sender, port or sequence number).
    skipped: u64,
}

impl Netlink<RouteSocket> {
    /// A requester on a fresh kernel socket.
    pub fn open() -> Result<Netlink<RouteSocket>, NetlinkError> {
        Ok(Netlink::new(RouteSocket::open()?))
    }
}

impl<T: Transport> Netlink<T> {
    /// A requester over `transport`, numbering from a random point as iproute2 numbers from
    /// the clock.
    pub fn new(transport: T) -> Netlink<T> {
        Netlink::with_first_seq(transport, crate::timing::random_u64() as u32)
    }

    /// A requester whose first request gets sequence number `first` (or 1 for 0).
    pub fn with_first_seq(transport: T, first: u32) -> Netlink<T> {
        Netlink {
            transport,
            last_seq: first.wrapping_sub(1),
            buf: Vec::new(),
            skipped: 0,
        }
    }

    #[cfg(test)]
    /// The transport (tests look at what was sent).
    pub(crate) fn transport(&self) -> &T {
        &self.transport
    }

    /// How many received messages were skipped as not answering our requests.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next sequence number: increasing, wrapping past 0.
    fn next_seq(&mut self) -> u32 {
        self.last_seq = self.last_seq.wrapping_add(1);
        if self.last_seq == 0 {
            self.last_seq = 1;
        }
        self.last_seq
    }

    /// Sends `request` (a whole message; its sequence number and port id are filled in
    /// here) and feeds every reply message addressed to it to `on_reply` until that says
    /// the exchange is finished.
    fn exchange(
        &mut self,
        request: &mut [u8],
        mut on_reply: impl FnMut(&Header, KernelReply<'_>) -> Result<Flow, NetlinkError>,
    ) -> Result<(), NetlinkError> {
        if request.len() < wire::HEADER_LEN {
            return Err(DecodeError {
                what: "request shorter than a message header",
                offset: 0,
            }
            .into());
        }
        let seq = self.next_seq();
        request[8..12].copy_from_slice(&seq.to_ne_bytes());
        request[12..16].copy_from_slice(&0u32.to_ne_bytes());
        self.transport
            .send(request)
            .map_err(|source| NetlinkError::Io {
                op: "send a netlink request",
                source,
            })?;
        let port = self.transport.port_id();
        let mut buf = std::mem::take(&mut self.buf);
        let outcome = loop {
            let sender = match self.transport.recv(&mut buf) {
                Ok(sender) => sender,
                Err(source) => {
                    break Err(NetlinkError::Io {
                        op: "receive a netlink reply",
                        source,
                    })
                }
            };
            if sender != 0 {
                self.skipped += 1;
                continue;
            }
            match self.handle_datagram(&buf, port, seq, &mut on_reply) {
                Ok(Flow::More) => {}
                Ok(Flow::Finished) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buf = buf;
        outcome
    }

    fn handle_datagram(
        &mut self,
        datagram: &[u8],
        port: u32,
        seq: u32,
        on_reply: &mut impl FnMut(&Header, KernelReply<'_>) -> Result<Flow, NetlinkError>,
    ) -> Result<Flow, NetlinkError> {
        for message in Messages::new(datagram) {
            let (header, payload) = message?;
            if header.port != port || header.seq != seq {
                self.skipped += 1;
                continue;
            }
            if let Flow::Finished = on_reply(&header, classify(&header, payload)?)? {
                return Ok(Flow::Finished);
            }
        }
        Ok(Flow::More)
    }

    /// Sends a change (which must carry `NLM_F_ACK`) and waits for its ack. A refusal comes
    /// back as [`NetlinkError::Kernel`].
    pub fn request(&mut self, request: &mut [u8]) -> Result<(), NetlinkError> {
        self.exchange(request, |_, reply| match reply {
            KernelReply::Ack => Ok(Flow::Finished),
            KernelReply::Error { errno, message } => Err(NetlinkError::Kernel { errno, message }),
            KernelReply::Overrun => Err(NetlinkError::Overrun),
            KernelReply::Done { .. } | KernelReply::Noop | KernelReply::Data { .. } => {
                Ok(Flow::More)
            }
        })
    }

    /// Sends a dump request and calls `on_message` with the type and payload of every
    /// message of the (multipart) reply until `NLMSG_DONE`. An error inside the dump, or
    /// in `NLMSG_DONE`, fails it; the status says whether the kernel flagged it
    /// interrupted.
    pub fn dump(
        &mut self,
        request: &mut [u8],
        mut on_message: impl FnMut(u16, &[u8]) -> Result<(), NetlinkError>,
    ) -> Result<DumpStatus, NetlinkError> {
        let mut status = DumpStatus { interrupted: false };
        self.exchange(request, |header, reply| {
            if header.flags & NLM_F_DUMP_INTR != 0 {
                status.interrupted = true;
            }
            match reply {
                KernelReply::Done { errno: 0 } => Ok(Flow::Finished),
                KernelReply::Done { errno } => Err(NetlinkError::Kernel {
                    errno,
                    message: None,
                }),
                KernelReply::Error { errno, message } => {
                    Err(NetlinkError::Kernel { errno, message })
                }
                KernelReply::Overrun => Err(NetlinkError::Overrun),
                KernelReply::Data { kind, payload } => {
                    on_message(kind, payload).map(|()| Flow::More)
                }
                KernelReply::Ack | KernelReply::Noop => Ok(Flow::More),
            }
        })?;
        Ok(status)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted kernel in the style of Go's `nltest`: every request sent is handed to a
    //! closure that returns the datagrams the "kernel" answers with.

    use std::collections::VecDeque;
    use std::io;

    use super::Transport;
    use crate::netlink::wire::{
        Header, MessageBuilder, HEADER_LEN, NLMSG_DONE, NLMSG_ERROR, NLM_F_CAPPED, NLM_F_MULTI,
    };

    /// The port id the fake kernel assigns.
    pub const PORT: u32 = 4242;

    /// A datagram and the port id it comes from.
    pub(crate) type Datagram = (u32, Vec<u8>);

    /// A fake socket: `answer(request)` gives the datagrams to queue for reading.
    pub(crate) struct FakeKernel<F: FnMut(&[u8]) -> Vec<Datagram>> {
        pub answer: F,
        pub sent: Vec<Vec<u8>>,
        pub queue: VecDeque<Datagram>,
    }

    impl<F: FnMut(&[u8]) -> Vec<Datagram>> FakeKernel<F> {
        pub fn new(answer: F) -> FakeKernel<F> {
            FakeKernel {
                answer,
                sent: Vec::new(),
                queue: VecDeque::new(),
            }
        }
    }

    impl<F: FnMut(&[u8]) -> Vec<Datagram>> Transport for FakeKernel<F> {
        fn port_id(&self) -> u32 {
            PORT
        }

        fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
            self.sent.push(datagram.to_vec());
            let replies = (self.answer)(datagram);
            self.queue.extend(replies);
            Ok(())
        }

        fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<u32> {
            let (port, datagram) = self.queue.pop_front().ok_or_else(|| {
                io::Error::new(io::ErrorKind::WouldBlock, "no reply (fake timeout)")
            })?;
            buf.clear();
            buf.extend_from_slice(&datagram);
            Ok(port)
        }
    }

    /// The request's header.
    pub fn header(request: &[u8]) -> Header {
        Header::decode(request).expect("request header")
    }

    /// The kernel's answer to `request`: an ack for errno 0, else an error echoing it.
    pub(crate) fn error_reply(request: &[u8], errno: i32) -> Vec<u8> {
        let h = header(request);
        let (flags, echoed) = if errno == 0 {
            (NLM_F_CAPPED, &request[..HEADER_LEN])
        } else {
            (0, request)
        };
        let mut message = MessageBuilder::new(NLMSG_ERROR, flags, h.seq, PORT);
        message.bytes(&(-errno).to_ne_bytes()).bytes(echoed);
        message.finish()
    }

    /// `NLMSG_DONE` for `request`, with status `-errno`.
    pub fn done(request: &[u8], errno: i32, extra_flags: u16) -> Vec<u8> {
        let mut message = MessageBuilder::new(
            NLMSG_DONE,
            NLM_F_MULTI | extra_flags,
            header(request).seq,
            PORT,
        );
        message.bytes(&(-errno).to_ne_bytes());
        message.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{done, error_reply, header, FakeKernel, PORT};
    use super::*;
    use crate::netlink::wire::{
        MessageBuilder, RouteAttr, RouteMessage, AF_INET, NLMSG_NOOP, NLM_F_ACK, NLM_F_DUMP,
        NLM_F_MULTI, NLM_F_REQUEST, RTM_GETROUTE, RTM_NEWROUTE,
    };

    fn route_request() -> Vec<u8> {
        RouteMessage::new(AF_INET).to_message(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK, 0, 0)
    }

    fn dump_request() -> Vec<u8> {
        RouteMessage::new(AF_INET).to_message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, 0, 0)
    }

    fn route_reply(request: &[u8], last_octet: u8, flags: u16) -> Vec<u8> {
        let route = RouteMessage {
            dst_len: 32,
            attrs: vec![RouteAttr::Dst([10, 0, 0, last_octet].into())],
            ..RouteMessage::new(AF_INET)
        };
        route.to_message(RTM_NEWROUTE, NLM_F_MULTI | flags, header(request).seq, PORT)
    }

    #[test]
    fn sequence_numbers_increase_skip_zero_and_port_is_zero() {
        let kernel = FakeKernel::new(|req| vec![(0, error_reply(req, 0))]);
        let mut nl = Netlink::with_first_seq(kernel, u32::MAX);
        for _ in 0..3 {
            nl.request(&mut route_request()).unwrap();
        }
        let seqs: Vec<u32> = nl.transport().sent.iter().map(|r| header(r).seq).collect();
        assert_eq!(seqs, [u32::MAX, 1, 2]);
        assert!(nl.transport().sent.iter().all(|r| header(r).port == 0));
    }

    #[test]
    fn kernel_errors_come_back_with_their_errno() {
        for errno in [libc::EEXIST, libc::ESRCH, libc::EPERM] {
            let kernel = FakeKernel::new(move |req| vec![(0, error_reply(req, errno))]);
            let mut nl = Netlink::new(kernel);
            let e = nl.request(&mut route_request()).unwrap_err();
            assert_eq!(e.kernel_errno(), Some(errno));
            assert_eq!(
                e.into_error("add a local route").raw_os_error(),
                Some(errno)
            );
        }
    }

    #[test]
    fn replies_from_other_senders_ports_or_requests_are_skipped() {
        let kernel = FakeKernel::new(|req| {
            let h = header(req);
            let mut stale = error_reply(req, libc::EEXIST);
            stale[8..12].copy_from_slice(&h.seq.wrapping_sub(1).to_ne_bytes());
            let mut other_port = error_reply(req, libc::EPERM);
            other_port[12..16].copy_from_slice(&(PORT + 1).to_ne_bytes());
            let noop = MessageBuilder::new(NLMSG_NOOP, 0, h.seq, PORT).finish();
            vec![
                (77, error_reply(req, libc::EPERM)), // not the kernel
                (0, stale),
                (0, [other_port, noop].concat()),
                (0, error_reply(req, 0)),
            ]
        });
        let mut nl = Netlink::new(kernel);
        nl.request(&mut route_request()).unwrap();
        assert_eq!(nl.skipped(), 3);
    }

    #[test]
    fn a_missing_reply_is_an_io_error() {
        let mut nl = Netlink::new(FakeKernel::new(|_| Vec::new()));
        assert!(matches!(
            nl.request(&mut route_request()),
            Err(NetlinkError::Io { .. })
        ));
    }

    #[test]
    fn multipart_dumps_span_datagrams_until_done() {
        let kernel = FakeKernel::new(|req| {
            vec![
                (0, [route_reply(req, 1, 0), route_reply(req, 2, 0)].concat()),
                (0, route_reply(req, 3, 0)),
                (0, [route_reply(req, 4, 0), done(req, 0, 0)].concat()),
            ]
        });
        let mut nl = Netlink::new(kernel);
        let mut seen = Vec::new();
        let status = nl
            .dump(&mut dump_request(), |kind, payload| {
                assert_eq!(kind, RTM_NEWROUTE);
                seen.push(RouteMessage::decode(payload)?.dst());
                Ok(())
            })
            .unwrap();
        assert!(!status.interrupted);
        let expected: Vec<_> = (1..=4)
            .map(|i| Some(std::net::IpAddr::from([10, 0, 0, i])))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn interrupted_dumps_are_reported() {
        let kernel = FakeKernel::new(|req| {
            vec![
                (0, route_reply(req, 1, 0)),
                (
                    0,
                    [
                        route_reply(req, 2, NLM_F_DUMP_INTR),
                        done(req, 0, NLM_F_DUMP_INTR),
                    ]
                    .concat(),
                ),
            ]
        });
        let mut nl = Netlink::new(kernel);
        let status = nl.dump(&mut dump_request(), |_, _| Ok(())).unwrap();
        assert!(status.interrupted);
    }

    #[test]
    fn errors_inside_dumps_and_in_done_fail_them() {
        let in_done = FakeKernel::new(|req| {
            vec![(0, route_reply(req, 1, 0)), (0, done(req, libc::EBUSY, 0))]
        });
        let e = Netlink::new(in_done)
            .dump(&mut dump_request(), |_, _| Ok(()))
            .unwrap_err();
        assert_eq!(e.kernel_errno(), Some(libc::EBUSY));

        let as_error = FakeKernel::new(|req| vec![(0, error_reply(req, libc::EINVAL))]);
        let e = Netlink::new(as_error)
            .dump(&mut dump_request(), |_, _| Ok(()))
            .unwrap_err();
        assert_eq!(e.kernel_errno(), Some(libc::EINVAL));

        let garbage = FakeKernel::new(|req| vec![(0, route_reply(req, 1, 0)[..20].to_vec())]);
        let e = Netlink::new(garbage)
            .dump(&mut dump_request(), |_, _| Ok(()))
            .unwrap_err();
        assert!(matches!(e, NetlinkError::Malformed(_)));

        // The callback's own error stops the dump too.
        let fine =
            FakeKernel::new(|req| vec![(0, [route_reply(req, 1, 0), done(req, 0, 0)].concat())]);
        let e = Netlink::new(fine)
            .dump(&mut dump_request(), |_, _| {
                Err(DecodeError {
                    what: "test",
                    offset: 0,
                }
                .into())
            })
            .unwrap_err();
        assert!(matches!(
            e,
            NetlinkError::Malformed(DecodeError { what: "test", .. })
        ));
    }

    #[test]
    fn a_stale_dump_tail_does_not_confuse_the_next_request() {
        // The first dump is abandoned after one datagram (the callback fails); its rest is
        // still queued when the next request's ack arrives.
        let mut calls = 0;
        let kernel = FakeKernel::new(move |req| {
            calls += 1;
            if calls == 1 {
                vec![
                    (0, route_reply(req, 1, 0)),
                    (0, [route_reply(req, 2, 0), done(req, 0, 0)].concat()),
                ]
            } else {
                vec![(0, error_reply(req, 0))]
            }
        });
        let mut nl = Netlink::new(kernel);
        assert!(nl
            .dump(&mut dump_request(), |_, _| Err(NetlinkError::Overrun))
            .is_err());
        nl.request(&mut route_request()).unwrap();
        assert_eq!(nl.skipped(), 2);
    }

    #[test]
    fn overruns_fail_requests() {
        let kernel = FakeKernel::new(|req| {
            vec![(
                0,
                MessageBuilder::new(wire::NLMSG_OVERRUN, 0, header(req).seq, PORT).finish(),
            )]
        });
        assert!(matches!(
            Netlink::new(kernel).request(&mut route_request()),
            Err(NetlinkError::Overrun)
        ));
    }
}
