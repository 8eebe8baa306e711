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

// ServeFast answers through the fast path only, parsed and prefetched as
// a batch reader does; ok is false when the fast path declines the query
// (the general path would answer it).
func (h *Handler) ServeFast(req []byte, src netip.Addr, tcp bool) (resp []byte, ok bool) {
	now := time.Now()
	if h.now != nil {
		now = h.now()
	}
	var f fastParsed
	h.prepare(req, src, &f)
	f.warm.Entries()
	f.warm.Rows()
	resp, _, ok = h.fastAnswer(nil, req, src, tcp, now, &f)
	return resp, ok
}

// Batch is a UDP reader's scratch for AnswerBatch.
type Batch struct {
	srcs   [udpBatch]netip.Addr
	parsed [udpBatch]fastParsed
	sink   uint32
}

// AnswerBatch answers up to udpBatch queries from src as the UDP reader
// answers a batch, with the prefetch passes or without, into out[i].
func (h *Handler) AnswerBatch(b *Batch, out, reqs [][]byte, src netip.Addr, prefetch bool) {
	start := time.Now()
	for i := range reqs {
		b.srcs[i] = src
	}
	parsed := prefetch && h.prefetchBatch(reqs, b.srcs[:len(reqs)], b.parsed[:len(reqs)], &b.sink)
	for i, req := range reqs {
		var f *fastParsed
		if parsed {
			f = &b.parsed[i]
		}
		out[i] = h.appendResponse(out[i][:0], req, src, false, start, f)
	}
	h.Metrics.observeFastBatch(b.parsed[:len(reqs)])
	releaseBatch(b.parsed[:len(reqs)])
}

// BatchSize is how many datagrams a UDP reader's batch holds.
const BatchSize = udpBatch

// Retains reports whether b still points into a snapshot.
func (b *Batch) Retains() bool {
	for i := range b.parsed {
		if b.parsed[i].p != nil {
			return true
		}
	}
	return false
}
