//! Local routes of one protocol — the routes the IP-forwarding daemon owns: table `local`,
//! type `local`, scope `host` (IPv4; IPv6 routes have no scope and the kernel reports
//! universe), protocol `ethernet_proto_id`, one output interface. Adding one that exists
//! (`EEXIST`) and deleting one that is gone (`ESRCH`) count as done, so a reconcile can be
//! repeated. Every request names the protocol, so the kernel never deletes a route of
//! another protocol for the same address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::socket::{Netlink, NetlinkError, Transport};
use super::wire::{
    RouteAttr, RouteMessage, AF_INET, AF_INET6, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE, RTN_LOCAL, RT_SCOPE_HOST,
    RT_SCOPE_UNIVERSE, RT_TABLE_LOCAL,
};

/// How often a dump the kernel flags as interrupted (the table changed meanwhile) is tried.
pub(crate) const DUMP_ATTEMPTS: usize = 5;

/// An owned local route: destination prefix and output interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalRoute {
    /// The destination address (the network address for a range).
    pub dst: IpAddr,
    /// The prefix length: 32 or 128 for one address.
    pub prefix_len: u8,
    /// The output interface index.
    pub ifindex: u32,
}

/// The address family number of an address.
pub(crate) fn family_of(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

/// The route message for `route` as owned by `protocol`: the same fields iproute2 sends for
/// `ip route add to local DST/LEN dev IF proto P table local`.
pub(crate) fn local_route_message(route: &LocalRoute, protocol: u8) -> RouteMessage {
    RouteMessage {
        dst_len: route.prefix_len,
        table: RT_TABLE_LOCAL,
        protocol,
        scope: if route.dst.is_ipv4() {
            RT_SCOPE_HOST
        } else {
            RT_SCOPE_UNIVERSE
        },
        route_type: RTN_LOCAL,
        attrs: vec![RouteAttr::Dst(route.dst), RouteAttr::Oif(route.ifindex)],
        ..RouteMessage::new(family_of(&route.dst))
    }
}

/// The `RTM_NEWROUTE` request adding `route` (create, fail if it exists, ack).
pub(crate) fn add_request(route: &LocalRoute, protocol: u8) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
    local_route_message(route, protocol).to_message(RTM_NEWROUTE, flags, 0, 0)
}

/// The `RTM_DELROUTE` request deleting `route` (ack).
pub(crate) fn delete_request(route: &LocalRoute, protocol: u8) -> Vec<u8> {
    local_route_message(route, protocol).to_message(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK, 0, 0)
}

/// The `RTM_GETROUTE` dump request iproute2 sends for `ip route show table local proto P`:
/// a kernel with strict checking filters by table and protocol; others send every route,
/// so replies are filtered again by [`owned_local_route`].
pub(crate) fn dump_request(family: u8, protocol: u8) -> Vec<u8> {
    let request = RouteMessage {
        protocol,
        attrs: vec![RouteAttr::Table(RT_TABLE_LOCAL as u32)],
        ..RouteMessage::new(family)
    };
    request.to_message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, 0, 0)
}

/// The owned local route a dumped route message is, if it is one: family `family`, table
/// local (`RTA_TABLE` preferred), type local, protocol `protocol`, with an output interface.
pub fn owned_local_route(route: &RouteMessage, family: u8, protocol: u8) -> Option<LocalRoute> {
    if route.family != family
        || route.table() != RT_TABLE_LOCAL as u32
        || route.route_type != RTN_LOCAL
        || route.protocol != protocol
    {
        return None;
    }
    let unspecified = if family == AF_INET {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    Some(LocalRoute {
        dst: route.dst().unwrap_or(unspecified),
        prefix_len: route.dst_len,
        ifindex: route.oif()?,
    })
}

/// What a change found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The kernel made the change.
    Made,
    /// It was already so: the route existed (add) or did not (delete).
    AlreadySo,
}

/// Adds `route`; one that exists already (`EEXIST`) is [`Change::AlreadySo`].
pub fn add_local<T: Transport>(
    nl: &mut Netlink<T>,
    route: &LocalRoute,
    protocol: u8,
) -> Result<Change, NetlinkError> {
    match nl.request(&mut add_request(route, protocol)) {
        Ok(()) => Ok(Change::Made),
        Err(e) if e.kernel_errno() == Some(libc::EEXIST) => Ok(Change::AlreadySo),
        Err(e) => Err(e),
    }
}

/// Deletes `route` (only if `protocol` owns it); one that is gone (`ESRCH`) is
/// [`Change::AlreadySo`].
pub fn delete_local<T: Transport>(
    nl: &mut Netlink<T>,
    route: &LocalRoute,
    protocol: u8,
) -> Result<Change, NetlinkError> {
    match nl.request(&mut delete_request(route, protocol)) {
        Ok(()) => Ok(Change::Made),
        Err(e) if e.kernel_errno() == Some(libc::ESRCH) => Ok(Change::AlreadySo),
        Err(e) => Err(e),
    }
}

/// Every owned local route of `family` in the kernel, on any interface, in dump order. A
/// dump the kernel flags as interrupted is done again, up to [`DUMP_ATTEMPTS`] times.
pub fn list_local<T: Transport>(
    nl: &mut Netlink<T>,
    family: u8,
    protocol: u8,
) -> Result<Vec<LocalRoute>, NetlinkError> {
    for _ in 0..DUMP_ATTEMPTS {
        let mut routes = Vec::new();
        let status = nl.dump(&mut dump_request(family, protocol), |kind, payload| {
            if kind == RTM_NEWROUTE {
                if let Some(route) =
                    owned_local_route(&RouteMessage::decode(payload)?, family, protocol)
                {
                    routes.push(route);
                }
            }
            Ok(())
        })?;
        if !status.interrupted {
            return Ok(routes);
        }
        debug!("route dump interrupted by a concurrent change; dumping again");
    }
    Err(NetlinkError::Io {
        op: "dump routes",
        source: std::io::Error::other("the routing table kept changing during the dump"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::socket::fake::{done, error_reply, header, FakeKernel, PORT};
    use crate::netlink::wire::fixtures::fixture;
    use crate::netlink::wire::{NLM_F_DUMP_INTR, NLM_F_MULTI};

    fn route(dst: &str, prefix_len: u8, ifindex: u32) -> LocalRoute {
        LocalRoute {
            dst: dst.parse().unwrap(),
            prefix_len,
            ifindex,
        }
    }

    /// The request with its sequence number set to `seq`.
    fn with_seq(mut request: Vec<u8>, seq: u32) -> Vec<u8> {
        request[8..12].copy_from_slice(&seq.to_ne_bytes());
        request
    }

    #[test]
    fn requests_are_what_iproute2_sends() {
        for (datagrams, request) in [
            (
                fixture!("add_v4"),
                add_request(&route("10.9.9.9", 32, 3), 66),
            ),
            (
                fixture!("add_alias"),
                add_request(&route("10.200.0.0", 28, 3), 66),
            ),
            (
                fixture!("add_v6"),
                add_request(&route("2001:db8::9", 128, 3), 66),
            ),
            (
                fixture!("del_v4"),
                delete_request(&route("10.9.9.9", 32, 3), 66),
            ),
            (fixture!("dump_v4_proto66"), dump_request(AF_INET, 66)),
            (fixture!("dump_v6_proto66"), dump_request(AF_INET6, 66)),
        ] {
            let captured = &datagrams[0].1;
            assert_eq!(with_seq(request, header(captured).seq), *captured);
        }
    }

    /// Replays a captured dump's replies, re-addressed to the fake's port and `seq`.
    fn replay(datagrams: &[(bool, Vec<u8>)], seq: u32) -> Vec<(u32, Vec<u8>)> {
        let mut replies = Vec::new();
        for (_, datagram) in datagrams.iter().skip(1) {
            let mut d = datagram.clone();
            let mut at = 0;
            while at + 16 <= d.len() {
                let len = u32::from_ne_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]) as usize;
                d[at + 8..at + 12].copy_from_slice(&seq.to_ne_bytes());
                d[at + 12..at + 16].copy_from_slice(&PORT.to_ne_bytes());
                at += crate::netlink::wire::align4(len.max(16));
            }
            replies.push((0, d));
        }
        replies
    }

    #[test]
    fn captured_dumps_list_only_owned_local_routes() {
        let local = fixture!("dump_v4_local");
        let mut nl = Netlink::new(FakeKernel::new(|req| replay(&local, header(req).seq)));
        let routes = list_local(&mut nl, AF_INET, 66).unwrap();
        // The kernel's own local routes and the `proto static` one are not ours.
        assert_eq!(
            routes,
            [route("10.9.9.9", 32, 3), route("10.200.0.0", 28, 3)]
        );

        let v6 = fixture!("dump_v6_proto66");
        let mut nl = Netlink::new(FakeKernel::new(|req| replay(&v6, header(req).seq)));
        assert_eq!(
            list_local(&mut nl, AF_INET6, 66).unwrap(),
            [route("2001:db8::9", 128, 3)]
        );
        // Another protocol id owns nothing here.
        let mut nl = Netlink::new(FakeKernel::new(|req| replay(&v6, header(req).seq)));
        assert_eq!(list_local(&mut nl, AF_INET6, 67).unwrap(), []);
    }

    #[test]
    fn the_filter_checks_family_table_type_protocol_and_interface() {
        let owned = local_route_message(&route("10.1.1.1", 32, 2), 66);
        assert_eq!(
            owned_local_route(&owned, AF_INET, 66),
            Some(route("10.1.1.1", 32, 2))
        );
        assert_eq!(owned_local_route(&owned, AF_INET6, 66), None);
        assert_eq!(owned_local_route(&owned, AF_INET, 4), None);
        let mut other_table = owned.clone();
        other_table.attrs.push(RouteAttr::Table(254));
        assert_eq!(
            owned_local_route(&other_table, AF_INET, 66),
            None,
            "RTA_TABLE wins over rtm_table"
        );
        let mut unicast = owned.clone();
        unicast.route_type = 1;
        assert_eq!(owned_local_route(&unicast, AF_INET, 66), None);
        let mut no_oif = owned.clone();
        no_oif.attrs.retain(|a| !matches!(a, RouteAttr::Oif(_)));
        assert_eq!(owned_local_route(&no_oif, AF_INET, 66), None);
    }

    #[test]
    fn eexist_and_esrch_are_success() {
        let r = route("10.9.9.9", 32, 3);
        let mut nl = Netlink::new(FakeKernel::new(|req| {
            vec![(0, error_reply(req, libc::EEXIST))]
        }));
        assert_eq!(add_local(&mut nl, &r, 66).unwrap(), Change::AlreadySo);
        let mut nl = Netlink::new(FakeKernel::new(|req| {
            vec![(0, error_reply(req, libc::ESRCH))]
        }));
        assert_eq!(delete_local(&mut nl, &r, 66).unwrap(), Change::AlreadySo);
        // ...but ESRCH on add and EEXIST on delete are not.
        let mut nl = Netlink::new(FakeKernel::new(|req| {
            vec![(0, error_reply(req, libc::ESRCH))]
        }));
        assert!(add_local(&mut nl, &r, 66).is_err());
        let mut nl = Netlink::new(FakeKernel::new(|req| {
            vec![(0, error_reply(req, libc::EEXIST))]
        }));
        assert!(delete_local(&mut nl, &r, 66).is_err());
        let mut nl = Netlink::new(FakeKernel::new(|req| vec![(0, error_reply(req, 0))]));
        assert_eq!(add_local(&mut nl, &r, 66).unwrap(), Change::Made);
        assert_eq!(delete_local(&mut nl, &r, 66).unwrap(), Change::Made);
    }

    #[test]
    fn interrupted_dumps_are_repeated_then_given_up() {
        let owned = local_route_message(&route("10.1.1.1", 32, 2), 66);
        let mut dumps = 0;
        let kernel = FakeKernel::new(move |req| {
            dumps += 1;
            let flags = if dumps < 3 { NLM_F_DUMP_INTR } else { 0 };
            let reply = owned.to_message(RTM_NEWROUTE, NLM_F_MULTI | flags, header(req).seq, PORT);
            vec![(0, [reply, done(req, 0, flags)].concat())]
        });
        let mut nl = Netlink::new(kernel);
        assert_eq!(
            list_local(&mut nl, AF_INET, 66).unwrap(),
            [route("10.1.1.1", 32, 2)]
        );
        assert_eq!(nl.transport().sent.len(), 3);

        let always = FakeKernel::new(|req| vec![(0, done(req, 0, NLM_F_DUMP_INTR))]);
        let mut nl = Netlink::new(always);
        assert!(list_local(&mut nl, AF_INET, 66).is_err());
        assert_eq!(nl.transport().sent.len(), DUMP_ATTEMPTS);
    }
}
