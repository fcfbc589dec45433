//! Which address a node binds and advertises.
//!
//! Everything a node tells others to connect to — its own address, its object
//! server, the rendezvous address of a collective group formed on it — must be
//! an address of that node that the other machines can reach. Ray picks the
//! address of the interface that routes to the head (or of the default route
//! on the head itself); so does oxray. The route is read by connecting a UDP
//! socket, which consults the routing table and sends nothing.

use crate::error::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// An address only reached through a default route (TEST-NET-3, RFC 5737):
/// what a UDP socket "connects" to in order to find the default route's
/// interface. No packet is sent to it.
const OUTSIDE: &str = "203.0.113.1:9";

/// The local address this machine uses to reach `peer`.
pub fn route_to(peer: SocketAddr) -> Result<IpAddr> {
    let unspecified: SocketAddr = if peer.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket =
        UdpSocket::bind(unspecified).map_err(|e| Error::runtime("cannot open a socket", e))?;
    socket
        .connect(peer)
        .map_err(|e| Error::runtime(&format!("no route to {peer}"), e))?;
    socket
        .local_addr()
        .map(|a| a.ip())
        .map_err(|e| Error::runtime("cannot read this machine's address", e))
}

/// The address of this machine's default-route interface: what a head binds
/// and advertises without `--node-ip-address`. 127.0.0.1 when the machine has
/// no default route (then it can only be a single-machine cluster).
pub fn default_node_ip() -> IpAddr {
    OUTSIDE
        .parse()
        .ok()
        .and_then(|outside| route_to(outside).ok())
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The address of the node this process belongs to: the host of its node's
/// object server (a worker, the embedded driver), else the address it reaches
/// the head from (a driver joined by address), else the default route's.
pub fn node_ip_address() -> Result<IpAddr> {
    let backend = crate::runtime::current()?;
    if let Some(ip) = backend
        .object_server()
        .and_then(|server| server.parse::<SocketAddr>().ok())
        .map(|server| server.ip())
    {
        return Ok(ip);
    }
    Ok(crate::runtime::head_address()
        .and_then(|head| head.parse::<SocketAddr>().ok())
        .and_then(|head| route_to(head).ok())
        .unwrap_or_else(default_node_ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_routes_to_itself() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(route_to(peer).unwrap(), peer.ip());
    }

    #[test]
    fn the_default_address_is_a_usable_one() {
        let ip = default_node_ip();
        assert!(!ip.is_unspecified() && !ip.is_multicast(), "{ip}");
    }
}
