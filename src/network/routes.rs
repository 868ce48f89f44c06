//! Reconciling the kernel's owned local routes with what each NIC wants: one dump, the
//! missing routes added first, then the stale ones deleted, each change logged once as the
//! original did; kernel refusals that retrying cannot help become notes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::nics::Link;
use super::plan::{self, NicEntry, NicPlan, Prefix};
use super::{as_logger, ROUTES_LOGGER};
use crate::error::{Error, Result};
use crate::netlink::route::{add_local, delete_local, list_local, Change, LocalRoute};
use crate::netlink::wire::{AF_INET, AF_INET6};
use crate::netlink::{Netlink, NetlinkError, Transport};

/// The kernel errors after which trying the same route again cannot help.
fn is_permanent(errno: i32) -> bool {
    [
        libc::EINVAL,
        libc::EAFNOSUPPORT,
        libc::ERANGE,
        libc::EOPNOTSUPP,
        libc::EACCES,
    ]
    .contains(&errno)
}

/// What one reconcile did, for tests and the bench.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Routes added (including ones the kernel already had under another owner).
    pub added: usize,
    /// Routes deleted.
    pub removed: usize,
    /// Netlink requests sent (dumps included).
    pub requests: usize,
}

/// The NICs metadata names that the kernel has, each with its wanted routes (entries
/// naming the same NIC merged) and whether stale routes may be removed from it.
pub struct FoundNic {
    pub link: Link,
    pub wanted: Vec<Prefix>,
    pub may_remove: bool,
}

/// Brings the owned local routes of the `found` NICs to what they want, over `nl`: dumps
/// both families once, adds what is missing on every NIC, then deletes what is stale, then
/// re-adds an address that moved between NICs (its add met the old route). Routes of other
/// protocols, and of NICs not in `found`, are never touched. Logs one line per changed NIC.
pub fn reconcile<T: Transport>(
    nl: &mut Netlink<T>,
    protocol: u8,
    found: &[FoundNic],
    notes: &mut Vec<String>,
) -> Result<Reconciled> {
    let mut done = Reconciled::default();
    let mut configured: BTreeMap<u32, Vec<Prefix>> = BTreeMap::new();
    for family in [AF_INET, AF_INET6] {
        done.requests += 1;
        match list_local(nl, family, protocol) {
            Ok(routes) => {
                for route in routes {
                    configured.entry(route.ifindex).or_default().push(Prefix {
                        addr: route.dst,
                        len: route.prefix_len,
                    });
                }
            }
            Err(e) if family == AF_INET6 && e.kernel_errno() == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return Err(e.into_error("list the local routes")),
        }
    }
    let plans: Vec<(&Link, NicPlan)> = found
        .iter()
        .map(|nic| {
            let have = configured
                .get(&nic.link.ifindex)
                .map(Vec::as_slice)
                .unwrap_or_default();
            (&nic.link, plan::plan_nic(have, &nic.wanted, nic.may_remove))
        })
        .collect();
    as_logger(ROUTES_LOGGER, || {
        for (link, plan) in &plans {
            if let Some(line) = plan::change_line(&link.name, plan) {
                info!("{}", line);
            }
        }
    });
    let mut retryable = 0usize;
    let mut failed = |what: &str, prefix: &Prefix, link: &Link, e: NetlinkError| -> Result<()> {
        match e.kernel_errno() {
            Some(errno) if is_permanent(errno) => {
                notes.push(format!(
                    "Could not {} {} on {}: {}.",
                    what, prefix, link.name, e
                ));
                Ok(())
            }
            Some(_) => {
                as_logger(ROUTES_LOGGER, || {
                    warn!("Could not {} {} on {}: {}.", what, prefix, link.name, e)
                });
                retryable += 1;
                Ok(())
            }
            None => Err(e.into_error("change a local route")),
        }
    };
    let route_of = |link: &Link, prefix: &Prefix| LocalRoute {
        dst: prefix.addr,
        prefix_len: prefix.len,
        ifindex: link.ifindex,
    };
    let mut met_old_route: Vec<(&Link, Prefix)> = Vec::new();
    for (link, plan) in &plans {
        for prefix in &plan.add {
            done.requests += 1;
            match add_local(nl, &route_of(link, prefix), protocol) {
                Ok(Change::Made) => done.added += 1,
                Ok(Change::AlreadySo) => met_old_route.push((link, *prefix)),
                Err(e) => failed("add", prefix, link, e)?,
            }
        }
    }
    let mut removed: BTreeSet<(IpAddr, u8)> = BTreeSet::new();
    for (link, plan) in &plans {
        for prefix in &plan.remove {
            done.requests += 1;
            match delete_local(nl, &route_of(link, prefix), protocol) {
                Ok(Change::Made) => {
                    done.removed += 1;
                    removed.insert((prefix.addr, prefix.len));
                }
                Ok(Change::AlreadySo) => {}
                Err(e) => failed("remove", prefix, link, e)?,
            }
        }
    }
    for (link, prefix) in met_old_route {
        if removed.contains(&(prefix.addr, prefix.len)) {
            done.requests += 1;
            match add_local(nl, &route_of(link, &prefix), protocol) {
                Ok(_) => done.added += 1,
                Err(e) => failed("add", &prefix, link, e)?,
            }
        }
    }
    if retryable > 0 {
        return Err(Error::Msg(format!(
            "{} local route change(s) failed",
            retryable
        )));
    }
    Ok(done)
}

/// One [`FoundNic`] per kernel interface: entries naming the same MAC are merged.
pub(super) fn merge_by_link(found: &[(&NicEntry, &Link)]) -> Vec<FoundNic> {
    let mut nics: Vec<FoundNic> = Vec::new();
    for (entry, link) in found {
        match nics.iter_mut().find(|n| n.link.ifindex == link.ifindex) {
            Some(nic) => {
                for prefix in &entry.wanted {
                    if !nic.wanted.contains(prefix) {
                        nic.wanted.push(*prefix);
                    }
                }
                nic.may_remove &= entry.refused.is_empty();
            }
            None => nics.push(FoundNic {
                link: (*link).clone(),
                wanted: entry.wanted.clone(),
                may_remove: entry.refused.is_empty(),
            }),
        }
    }
    nics
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::route::{local_route_message, owned_local_route};
    use crate::netlink::socket::fake::{done, error_reply, header, Datagram, FakeKernel, PORT};
    use crate::netlink::wire::{
        Messages, RouteMessage, NLM_F_MULTI, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE,
    };
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A fake kernel holding a route table: dumps list it, adds and deletes change it with
    /// the kernel's answers (EEXIST for any route to the same destination, ESRCH when no
    /// route of that protocol matches).
    #[derive(Default)]
    struct Table {
        routes: Vec<(LocalRoute, u8)>,
        requests: Vec<u16>,
    }

    fn kernel(table: Rc<RefCell<Table>>) -> FakeKernel<impl FnMut(&[u8]) -> Vec<Datagram>> {
        FakeKernel::new(move |request| {
            let mut t = table.borrow_mut();
            let (h, payload) = Messages::new(request).next().unwrap().unwrap();
            t.requests.push(h.kind);
            let route = RouteMessage::decode(payload).unwrap();
            match h.kind {
                RTM_GETROUTE => {
                    let mut replies = Vec::new();
                    for (r, proto) in &t.routes {
                        if crate::netlink::route::family_of(&r.dst) == route.family {
                            let message = local_route_message(r, *proto);
                            replies.push(message.to_message(
                                RTM_NEWROUTE,
                                NLM_F_MULTI,
                                h.seq,
                                PORT,
                            ));
                        }
                    }
                    replies.push(done(request, 0, 0));
                    vec![(0, replies.concat())]
                }
                RTM_NEWROUTE => {
                    let new = owned_local_route(&route, route.family, route.protocol).unwrap();
                    let exists = t
                        .routes
                        .iter()
                        .any(|(r, _)| (r.dst, r.prefix_len) == (new.dst, new.prefix_len));
                    if exists {
                        vec![(0, error_reply(request, libc::EEXIST))]
                    } else {
                        t.routes.push((new, route.protocol));
                        vec![(0, error_reply(request, 0))]
                    }
                }
                RTM_DELROUTE => {
                    let old = owned_local_route(&route, route.family, route.protocol).unwrap();
                    let before = t.routes.len();
                    t.routes
                        .retain(|(r, p)| !(*r == old && *p == route.protocol));
                    let errno = if t.routes.len() == before {
                        libc::ESRCH
                    } else {
                        0
                    };
                    vec![(0, error_reply(request, errno))]
                }
                _ => vec![(0, error_reply(request, libc::EOPNOTSUPP))],
            }
        })
    }

    fn link(name: &str, ifindex: u32) -> Link {
        Link {
            name: name.into(),
            ifindex,
            mac: format!("42:01:0a:80:00:{:02x}", ifindex),
        }
    }

    fn nic(name: &str, ifindex: u32, wanted: &[&str], may_remove: bool) -> FoundNic {
        FoundNic {
            link: link(name, ifindex),
            wanted: wanted.iter().map(|w| Prefix::parse(w).unwrap()).collect(),
            may_remove,
        }
    }

    fn routes(table: &Rc<RefCell<Table>>) -> Vec<(String, u32, u8)> {
        let mut all: Vec<_> = table
            .borrow()
            .routes
            .iter()
            .map(|(r, p)| {
                (
                    Prefix {
                        addr: r.dst,
                        len: r.prefix_len,
                    }
                    .to_string(),
                    r.ifindex,
                    *p,
                )
            })
            .collect();
        all.sort();
        all
    }

    fn run(table: &Rc<RefCell<Table>>, nics: &[FoundNic]) -> Reconciled {
        let mut nl = Netlink::new(kernel(Rc::clone(table)));
        let mut notes = Vec::new();
        let done = reconcile(&mut nl, 66, nics, &mut notes).unwrap();
        assert!(notes.is_empty(), "{:?}", notes);
        done
    }

    fn r(text: &str, ifindex: u32, proto: u8) -> (String, u32, u8) {
        (text.to_string(), ifindex, proto)
    }

    #[test]
    fn reconcile_adds_then_removes_and_leaves_other_protocols_alone() {
        let table = Rc::new(RefCell::new(Table::default()));
        let foreign = LocalRoute {
            dst: "10.0.0.9".parse().unwrap(),
            prefix_len: 32,
            ifindex: 2,
        };
        table.borrow_mut().routes.push((foreign, 4));
        let done = run(
            &table,
            &[nic(
                "eth0",
                2,
                &["10.0.0.1", "10.200.0.0/28", "2001:db8::9"],
                true,
            )],
        );
        assert_eq!((done.added, done.removed, done.requests), (3, 0, 5));
        assert_eq!(
            routes(&table),
            [
                r("10.0.0.1", 2, 66),
                r("10.0.0.9", 2, 4),
                r("10.200.0.0/28", 2, 66),
                r("2001:db8::9", 2, 66)
            ]
        );

        // One address changes: two dumps and exactly one add and one delete.
        table.borrow_mut().requests.clear();
        let done = run(
            &table,
            &[nic(
                "eth0",
                2,
                &["10.0.0.2", "10.200.0.0/28", "2001:db8::9"],
                true,
            )],
        );
        assert_eq!((done.added, done.removed), (1, 1));
        assert_eq!(
            table.borrow().requests,
            [RTM_GETROUTE, RTM_GETROUTE, RTM_NEWROUTE, RTM_DELROUTE]
        );

        // Nothing wanted: ours go, the protocol-4 route stays.
        run(&table, &[nic("eth0", 2, &[], true)]);
        assert_eq!(routes(&table), [r("10.0.0.9", 2, 4)]);
        // Metadata wanting the foreign route's address: EEXIST counts as done, nothing changes.
        run(&table, &[nic("eth0", 2, &["10.0.0.9"], true)]);
        run(&table, &[nic("eth0", 2, &[], true)]);
        assert_eq!(routes(&table), [r("10.0.0.9", 2, 4)]);
    }

    #[test]
    fn reconcile_holds_back_removals_and_leaves_unlisted_nics_alone() {
        let table = Rc::new(RefCell::new(Table::default()));
        run(
            &table,
            &[
                nic("eth0", 2, &["10.0.0.1"], true),
                nic("eth1", 3, &["10.1.0.1"], true),
            ],
        );
        // eth1 is not in this update (unknown MAC, say); eth0 had unusable values.
        let done = run(&table, &[nic("eth0", 2, &["10.0.0.2"], false)]);
        assert_eq!((done.added, done.removed), (1, 0));
        assert_eq!(
            routes(&table),
            [
                r("10.0.0.1", 2, 66),
                r("10.0.0.2", 2, 66),
                r("10.1.0.1", 3, 66)
            ]
        );
    }

    #[test]
    fn an_address_that_moves_between_nics_ends_up_on_the_new_one() {
        let table = Rc::new(RefCell::new(Table::default()));
        run(
            &table,
            &[
                nic("eth0", 2, &["10.0.0.1"], true),
                nic("eth1", 3, &[], true),
            ],
        );
        let done = run(
            &table,
            &[
                nic("eth0", 2, &[], true),
                nic("eth1", 3, &["10.0.0.1"], true),
            ],
        );
        assert_eq!((done.added, done.removed), (1, 1));
        assert_eq!(routes(&table), [r("10.0.0.1", 3, 66)]);
    }

    #[test]
    fn kernel_refusals_are_notes_or_retries() {
        let refuse = |errno: i32| {
            FakeKernel::new(move |request: &[u8]| {
                if header(request).kind == RTM_GETROUTE {
                    vec![(0, done(request, 0, 0))]
                } else {
                    vec![(0, error_reply(request, errno))]
                }
            })
        };
        let nics = [nic("eth0", 2, &["10.0.0.1"], true)];
        let mut notes = Vec::new();
        let mut nl = Netlink::new(refuse(libc::EINVAL));
        assert!(
            reconcile(&mut nl, 66, &nics, &mut notes).is_ok(),
            "a permanent refusal is not retried"
        );
        assert_eq!(
            notes,
            ["Could not add 10.0.0.1 on eth0: Invalid argument (os error 22)."]
        );
        let mut nl = Netlink::new(refuse(libc::ENOBUFS));
        assert!(
            reconcile(&mut nl, 66, &nics, &mut Vec::new()).is_err(),
            "a transient one is"
        );
        // No reply at all: the socket is broken, stop at once.
        let mut nl = Netlink::new(FakeKernel::new(|_| Vec::new()));
        assert!(reconcile(&mut nl, 66, &nics, &mut Vec::new()).is_err());
    }

    #[test]
    fn entries_for_the_same_nic_are_merged() {
        let e1 = NicEntry {
            index: 0,
            mac: Some("m".into()),
            wanted: vec![Prefix::parse("10.0.0.1").unwrap()],
            refused: Vec::new(),
            dhcpv6_refresh: false,
        };
        let e2 = NicEntry {
            index: 1,
            wanted: vec![
                Prefix::parse("10.0.0.2").unwrap(),
                Prefix::parse("10.0.0.1").unwrap(),
            ],
            refused: vec![plan::Refused {
                field: "forwardedIps",
                value: "x".into(),
                reason: "bad",
            }],
            ..e1.clone()
        };
        let l = link("eth0", 2);
        let merged = merge_by_link(&[(&e1, &l), (&e2, &l)]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].wanted.len(), 2);
        assert!(!merged[0].may_remove);
    }
}
