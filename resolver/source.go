package resolver

import "net/netip"

// reflectionPorts are UDP source ports no DNS client sends from. Each is a
// service that answers any datagram it gets, so a query "from" it is a
// forgery aimed at that service: our answer would reach it, and its reply
// would reach us as a new query, a loop the forger started with one packet
// (or a flood at the service, if it amplifies). Real resolvers send from
// ephemeral ports (RFC 6056: 1024..65535, in practice 32768 and up) or,
// configured so, from 53, which is not on the list.
//
//	0    not a port: no reply can be delivered to it (RFC 768)
//	7    echo (RFC 862): returns the datagram, a loop
//	13   daytime (RFC 867): answers any datagram
//	17   quote of the day (RFC 865): answers any datagram
//	19   chargen (RFC 864): answers any datagram with up to 512 bytes, the classic loop
//	37   time (RFC 868): answers any datagram
//	123  NTP: servers answer mode 6/7 control queries; a reflection target
//	     and source, never a DNS client (the NTP daemon holds the port)
var reflectionPorts = [...]uint16{0, 7, 13, 17, 19, 37, 123}

// plausibleSource reports whether a UDP query from addr:port can have come
// from a real client. Forged ones are dropped without an answer: port 0 and
// the reflection ports above, the unspecified address (0.0.0.0, ::, and
// 0.0.0.0/8, "this network", which RFC 1122 allows only while a host learns
// its address), the limited broadcast 255.255.255.255, and multicast
// (224.0.0.0/4, ff00::/8): a host never sends from a group or broadcast
// address, and an answer to one would go to every member.
func plausibleSource(addr netip.Addr, port uint16) bool {
	for _, p := range reflectionPorts {
		if port == p {
			return false
		}
	}
	if addr.IsUnspecified() || addr.IsMulticast() {
		return false
	}
	if addr.Is4() {
		a := addr.As4()
		if a[0] == 0 || a == [4]byte{255, 255, 255, 255} {
			return false
		}
	}
	return true
}
