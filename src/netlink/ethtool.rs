//! A NIC's channel counts through ethtool's generic-netlink family (`ethtool`, Linux 5.6+):
//! the family id from the generic-netlink controller, then `ETHTOOL_MSG_CHANNELS_GET` and
//! `ETHTOOL_MSG_CHANNELS_SET`, over a raw `NETLINK_GENERIC` socket of its own (what
//! `ethtool -l` / `ethtool -L` do, without the program). Message building and parsing are
//! pure; [`GenlSocket`] does the system calls, through the wrappers of `crate::sys`.

use std::os::fd::{AsFd, OwnedFd};

use super::wire::{
    align4, ATTR_HEADER_LEN, HEADER_LEN, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};
use crate::error::{Error, Result};
use crate::sys;

/// The generic-netlink controller's message type.
const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_GETFAMILY`.
const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (u16).
const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (string).
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// `genlmsghdr` length.
const GENL_HEADER_LEN: usize = 4;
/// The family's name.
const ETHTOOL_FAMILY: &str = "ethtool";
/// `ETHTOOL_GENL_VERSION`.
const ETHTOOL_VERSION: u8 = 1;
/// `ETHTOOL_MSG_CHANNELS_GET` / `_SET` (user to kernel).
const ETHTOOL_MSG_CHANNELS_GET: u8 = 17;
const ETHTOOL_MSG_CHANNELS_SET: u8 = 18;
/// `ETHTOOL_A_CHANNELS_*`.
const ETHTOOL_A_CHANNELS_HEADER: u16 = 1;
const ETHTOOL_A_CHANNELS_COMBINED_MAX: u16 = 5;
const ETHTOOL_A_CHANNELS_COMBINED_COUNT: u16 = 9;
/// `ETHTOOL_A_HEADER_DEV_NAME`.
const ETHTOOL_A_HEADER_DEV_NAME: u16 = 2;
/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;
/// Attribute type bits without the flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A NIC's combined channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Combined {
    /// The most the device offers.
    pub max: u32,
    /// How many are in use.
    pub count: u32,
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = ATTR_HEADER_LEN + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A whole request: `nlmsghdr`, `genlmsghdr`, attributes.
fn message(msg_type: u16, flags: u16, seq: u32, cmd: u8, version: u8, attrs: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + GENL_HEADER_LEN + attrs.len();
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&msg_type.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[cmd, version, 0, 0]);
    buf.extend_from_slice(attrs);
    buf
}

/// The family-id request.
pub(crate) fn family_request(seq: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    push_attr(&mut attrs, CTRL_ATTR_FAMILY_NAME, &c_string(ETHTOOL_FAMILY));
    message(
        GENL_ID_CTRL,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        CTRL_CMD_GETFAMILY,
        1,
        &attrs,
    )
}

fn device_header(dev: &str) -> Vec<u8> {
    let mut nested = Vec::new();
    push_attr(&mut nested, ETHTOOL_A_HEADER_DEV_NAME, &c_string(dev));
    let mut attrs = Vec::new();
    push_attr(
        &mut attrs,
        ETHTOOL_A_CHANNELS_HEADER | NLA_F_NESTED,
        &nested,
    );
    attrs
}

/// `ETHTOOL_MSG_CHANNELS_GET` for `dev`.
pub(crate) fn channels_get_request(family: u16, seq: u32, dev: &str) -> Vec<u8> {
    let attrs = device_header(dev);
    message(
        family,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        ETHTOOL_MSG_CHANNELS_GET,
        ETHTOOL_VERSION,
        &attrs,
    )
}

/// `ETHTOOL_MSG_CHANNELS_SET` of the combined count for `dev`.
pub(crate) fn channels_set_request(family: u16, seq: u32, dev: &str, combined: u32) -> Vec<u8> {
    let mut attrs = device_header(dev);
    push_attr(
        &mut attrs,
        ETHTOOL_A_CHANNELS_COMBINED_COUNT,
        &combined.to_ne_bytes(),
    );
    message(
        family,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        ETHTOOL_MSG_CHANNELS_SET,
        ETHTOOL_VERSION,
        &attrs,
    )
}

/// Attributes in `data` as (type without flags, payload).
pub(crate) fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= ATTR_HEADER_LEN {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < ATTR_HEADER_LEN || len > data.len() {
            break;
        }
        out.push((kind, &data[ATTR_HEADER_LEN..len]));
        data = &data[align4(len).min(data.len())..];
    }
    out
}

/// One reply datagram's messages: (type, payload after `nlmsghdr`).
fn messages(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < HEADER_LEN || len > data.len() {
            break;
        }
        out.push((kind, &data[HEADER_LEN..len]));
        data = &data[align4(len).min(data.len())..];
    }
    out
}

/// The generic-netlink attributes of a reply message's payload.
fn genl_attributes(payload: &[u8]) -> Vec<(u16, &[u8])> {
    attributes(payload.get(GENL_HEADER_LEN..).unwrap_or(&[]))
}

/// One reply's attributes: (type without flags, payload).
type OwnedAttributes = Vec<(u16, Vec<u8>)>;

/// A raw `NETLINK_GENERIC` socket.
pub(crate) struct GenlSocket {
    fd: OwnedFd,
    seq: u32,
    family: u16,
}

impl GenlSocket {
    /// Opens the socket and resolves the `ethtool` family (an error on kernels before 5.6).
    pub(crate) fn open() -> Result<GenlSocket> {
        let fd = sys::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_GENERIC,
        )
        .map_err(|e| Error::sys("open generic netlink socket", e))?;
        let timeout = libc::timeval {
            tv_sec: super::socket::REPLY_TIMEOUT_SECS,
            tv_usec: 0,
        };
        sys::setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)
            .map_err(|e| Error::sys("set netlink receive timeout", e))?;
        let mut sock = GenlSocket {
            fd,
            seq: 1,
            family: 0,
        };
        let reply = sock.transact(family_request)?;
        let family = reply
            .iter()
            .find_map(|attrs| u32_attr_u16(attrs, CTRL_ATTR_FAMILY_ID))
            .ok_or_else(|| Error::Msg("the kernel has no ethtool netlink family".into()))?;
        sock.family = family;
        Ok(sock)
    }

    /// A device's combined channels.
    pub(crate) fn combined(&mut self, dev: &str) -> Result<Combined> {
        let family = self.family;
        let reply = self.transact(|seq| channels_get_request(family, seq, dev))?;
        let attrs = reply
            .first()
            .ok_or_else(|| Error::Msg(format!("no channel reply for {}", dev)))?;
        Ok(Combined {
            max: u32_attr_owned(attrs, ETHTOOL_A_CHANNELS_COMBINED_MAX).unwrap_or(0),
            count: u32_attr_owned(attrs, ETHTOOL_A_CHANNELS_COMBINED_COUNT).unwrap_or(0),
        })
    }

    /// Sets a device's combined channel count.
    pub(crate) fn set_combined(&mut self, dev: &str, count: u32) -> Result<()> {
        let family = self.family;
        self.transact(|seq| channels_set_request(family, seq, dev, count))
            .map(|_| ())
    }

    /// Sends one request and collects the attributes of each data reply until the ack.
    fn transact(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> Result<Vec<OwnedAttributes>> {
        self.seq = self.seq.wrapping_add(1);
        let request = build(self.seq);
        sys::sendto_netlink(self.fd.as_fd(), &request, &sys::netlink_address())
            .map_err(|e| Error::sys("send to generic netlink", e))?;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; super::socket::RECV_BUFFER];
        loop {
            let n = sys::recv(self.fd.as_fd(), &mut buf)
                .map_err(|e| Error::sys("receive from generic netlink", e))?;
            for (kind, payload) in messages(&buf[..n]) {
                match kind {
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if errno == 0 {
                            return Ok(replies);
                        }
                        return Err(Error::sys(
                            "ethtool netlink request",
                            std::io::Error::from_raw_os_error(-errno),
                        ));
                    }
                    NLMSG_DONE => return Ok(replies),
                    _ => replies.push(
                        genl_attributes(payload)
                            .into_iter()
                            .map(|(k, p)| (k, p.to_vec()))
                            .collect(),
                    ),
                }
            }
        }
    }
}

fn u32_attr_u16(attrs: &[(u16, Vec<u8>)], kind: u16) -> Option<u16> {
    attrs
        .iter()
        .find(|(k, _)| *k == kind)
        .and_then(|(_, p)| p.get(..2))
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

fn u32_attr_owned(attrs: &[(u16, Vec<u8>)], kind: u16) -> Option<u32> {
    attrs
        .iter()
        .find(|(k, _)| *k == kind)
        .and_then(|(_, p)| p.get(..4))
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_kernel_layout() {
        let req = family_request(7);
        // nlmsghdr (16) + genlmsghdr (4) + attr header (4) + "ethtool\0" (8).
        assert_eq!(req.len(), 32);
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()), 32);
        assert_eq!(
            u16::from_ne_bytes(req[4..6].try_into().unwrap()),
            GENL_ID_CTRL
        );
        assert_eq!(
            u16::from_ne_bytes(req[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().unwrap()), 7);
        assert_eq!(&req[16..20], &[CTRL_CMD_GETFAMILY, 1, 0, 0]);
        assert_eq!(&req[24..], b"ethtool\0");

        let set = channels_set_request(30, 9, "eth0", 4);
        assert_eq!(&set[16..20], &[ETHTOOL_MSG_CHANNELS_SET, 1, 0, 0]);
        let attrs = attributes(&set[20..]);
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0].0, ETHTOOL_A_CHANNELS_HEADER);
        assert_eq!(
            u16::from_ne_bytes(set[22..24].try_into().unwrap()),
            ETHTOOL_A_CHANNELS_HEADER | NLA_F_NESTED
        );
        let inner = attributes(attrs[0].1);
        assert_eq!(inner, [(ETHTOOL_A_HEADER_DEV_NAME, &b"eth0\0"[..])]);
        assert_eq!(
            attrs[1],
            (ETHTOOL_A_CHANNELS_COMBINED_COUNT, &4u32.to_ne_bytes()[..])
        );
        let owned: Vec<(u16, Vec<u8>)> = attrs.iter().map(|(k, p)| (*k, p.to_vec())).collect();
        assert_eq!(
            u32_attr_owned(&owned, ETHTOOL_A_CHANNELS_COMBINED_COUNT),
            Some(4)
        );
    }

    #[test]
    fn malformed_attributes_stop_the_walk() {
        assert!(attributes(&[1, 0, 0, 0]).is_empty());
        assert!(attributes(&[200, 0, 1, 0, 0, 0]).is_empty());
        assert!(messages(&[0; 8]).is_empty());
    }

    /// The kernel resolves the family and parses our header: loopback has no channels
    /// (EOPNOTSUPP) and a missing device is ENODEV, not EINVAL. Read-only.
    #[test]
    fn the_kernel_understands_our_requests() {
        let Ok(mut sock) = GenlSocket::open() else {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI kernels have the ethtool netlink family"
            );
            return;
        };
        assert_ne!(sock.family, 0);
        let lo = sock.combined("lo").unwrap_err();
        assert_eq!(lo.raw_os_error(), Some(libc::EOPNOTSUPP), "{}", lo);
        let missing = sock.combined("no-such-nic0").unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENODEV), "{}", missing);
    }
}
