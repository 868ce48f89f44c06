//! rtnetlink without a netlink crate: what the IP-forwarding daemon needs to own local
//! routes, over a raw `NETLINK_ROUTE` socket (no `ip` program, no ioctl).
//!
//! - [`wire`]: pure encode/decode of `nlmsghdr`, `rtmsg`, `rtattr` and the control messages.
//! - [`socket`]: the socket (its system calls through `crate::sys`) and request/ack/dump
//!   matching.
//! - [`route`]: owned local routes — add, delete, list — idempotently.

pub mod route;
pub mod socket;
pub mod wire;

pub use route::{add_local, delete_local, list_local, Change, LocalRoute};
pub use socket::{Netlink, NetlinkError, RouteSocket, Transport};
