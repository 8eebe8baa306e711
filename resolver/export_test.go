package resolver

import "net/netip"

// ServeSlow answers through the general path only, so that tests can hold
// the fast path to it.
func (h *Handler) ServeSlow(req []byte, src netip.Addr, tcp bool) []byte {
	slow := *h
	slow.noFast = true
	return slow.ServeDNS(req, src, tcp)
}

// ServeFast answers through the fast path only; ok is false when the fast
// path declines the query (the general path would answer it).
func (h *Handler) ServeFast(req []byte, src netip.Addr, tcp bool) (resp []byte, ok bool) {
	resp, _, ok = h.fastAnswer(nil, req, src, tcp)
	return resp, ok
}
