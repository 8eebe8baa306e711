package resolver

import "net/netip"

// ServeSlow answers through the general path only, so that tests can hold
// the fast path to it.
func (h *Handler) ServeSlow(req []byte, src netip.Addr, tcp bool) []byte {
	slow := *h
	slow.noFast = true
	return slow.ServeDNS(req, src, tcp)
}
