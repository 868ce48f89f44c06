//! Fuzz target for `gce_guest::netlink`: any bytes, taken as datagrams from the kernel,
//! never make the decoder or the request/dump loops panic or hang.
//!
//! - `wire`: the message iterator, `classify`, and `RouteMessage::decode` on every message;
//!   a route that decodes encodes back to a message that decodes to the same route.
//! - `socket` + `route`: the input, split into datagrams at every `0xff 0xff 0xff 0xff`,
//!   is what a scripted kernel answers to an add, a delete and a dump (sequence number 1,
//!   2, 3 and port id 7, so inputs can match them), through the real `Netlink` loops.

#![no_main]

use std::collections::VecDeque;
use std::io;

use gce_guest::netlink::route::{
    add_local, delete_local, list_local, owned_local_route, LocalRoute,
};
use gce_guest::netlink::wire::{classify, Messages, RouteMessage, AF_INET};
use gce_guest::netlink::{Netlink, Transport};
use libfuzzer_sys::fuzz_target;

/// A kernel that answers every request with the next datagrams of the input.
struct Replay {
    datagrams: VecDeque<Vec<u8>>,
}

impl Transport for Replay {
    fn port_id(&self) -> u32 {
        7
    }

    fn send(&mut self, _datagram: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<u32> {
        let datagram = self
            .datagrams
            .pop_front()
            .ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, "no more input"))?;
        buf.clear();
        buf.extend_from_slice(&datagram);
        Ok(0)
    }
}

fn split_datagrams(data: &[u8]) -> VecDeque<Vec<u8>> {
    let mut out = VecDeque::new();
    let mut rest = data;
    while let Some(at) = rest.windows(4).position(|w| w == [0xff; 4]) {
        out.push_back(rest[..at].to_vec());
        rest = &rest[at + 4..];
    }
    out.push_back(rest.to_vec());
    out
}

fuzz_target!(|data: &[u8]| {
    for message in Messages::new(data) {
        let Ok((header, payload)) = message else {
            break;
        };
        let _ = classify(&header, payload);
        if let Ok(route) = RouteMessage::decode(payload) {
            let _ = (route.dst(), route.oif(), route.table());
            let _ = owned_local_route(&route, route.family, route.protocol);
            let bytes = route.to_message(header.kind, header.flags, header.seq, header.port);
            let (_, again) = Messages::new(&bytes)
                .next()
                .expect("one message")
                .expect("our own message is well formed");
            assert_eq!(
                RouteMessage::decode(again).expect("our own route decodes"),
                route
            );
        }
    }

    let mut nl = Netlink::with_first_seq(
        Replay {
            datagrams: split_datagrams(data),
        },
        1,
    );
    let route = LocalRoute {
        dst: [10, 0, 0, 1].into(),
        prefix_len: 32,
        ifindex: 2,
    };
    let _ = add_local(&mut nl, &route, 66);
    let _ = delete_local(&mut nl, &route, 66);
    let _ = list_local(&mut nl, AF_INET, 66);
});
