package resolver

import (
	"net/netip"
	"time"
)

// ServeSlow answers through the general path only, so that tests can hold
// the fast path to it.
func (h *Handler) ServeSlow(req []byte, src netip.Addr, tcp bool) []byte {
	slow := *h
	slow.noFast = true
	return slow.ServeDNS(req, src, tcp)
}

// SetClock makes h read the time of cookies and response rate limiting
// from now.
func (h *Handler) SetClock(now func() time.Time) { h.now = now }

// SetEpoch sets the time l counts from, for a test clock that is not
// time.Now.
func (l *RateLimiter) SetEpoch(t time.Time) { l.epoch = t }

// ServeFast answers through the fast path only; ok is false when the fast
// path declines the query (the general path would answer it).
func (h *Handler) ServeFast(req []byte, src netip.Addr, tcp bool) (resp []byte, ok bool) {
	now := time.Now()
	if h.now != nil {
		now = h.now()
	}
	resp, _, ok = h.fastAnswer(nil, req, src, tcp, now)
	return resp, ok
}
