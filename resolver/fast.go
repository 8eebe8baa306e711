package resolver

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/mapping"
)

// The fast path answers the query a CDN name server gets almost all the
// time: one question, A or AAAA, class IN, for a property, with at most an
// OPT record (ECS, NSID). It reads the packet in place and writes the
// answer straight into the caller's buffer, allocating nothing. Anything
// else (other names or types, errors, truncation, EDNS versions, NODATA)
// returns ok=false and takes the general path, which has the same
// behaviour and is what the protocol tests hold both to.

// fastQuery is what the fast path reads of a query.
type fastQuery struct {
	qEnd    int // end of the question section
	qtype   uint16
	hasOPT  bool
	udpSize uint16
	do      bool
	opts    ednsOptions
	ecsRaw  []byte // the ECS option's address bytes, echoed as received
}

// fastParsed is a query read by the fast path: what parseFast read, and
// the property it asks for. A batch reader parses its datagrams before it
// answers them, to prefetch what their decisions will read (prefetch).
type fastParsed struct {
	name [256]byte // the lower-case presentation name, name[:n]
	n    int
	q    fastQuery
	p    *mapping.ServedProperty
	ok   bool // the query has the fast path's shape and asks for p
	warm mapping.Prefetch
	// answered is the query type of the answer the fast path made of a
	// batch's query, for the batch's count; 0 for none.
	answered uint16
}

// parse reads req into f and finds the property it asks for; f.ok says
// whether the fast path may answer it. req holds at least a header.
func (h *Handler) parse(req []byte, f *fastParsed) bool {
	f.ok, f.q = false, fastQuery{} // a batch reader reuses f
	n, ok := parseFast(req, &f.name, &f.q)
	if !ok {
		return false
	}
	snap := h.Snapshot.Load()
	if snap == nil {
		return false
	}
	node := snap.LookupBytes(f.name[:n])
	if node == nil || node.Property == nil {
		return false
	}
	f.n, f.p, f.ok = n, node.Property, true
	return true
}

// prepare parses req into f and, when the fast path will answer it,
// makes the prefetch of its decision (f.warm). It answers nothing and
// counts nothing.
func (h *Handler) prepare(req []byte, src netip.Addr, f *fastParsed) {
	// A batch reader reuses f: nothing of an earlier query may stay,
	// least of all a pointer into an old snapshot.
	f.ok, f.p, f.warm, f.answered = false, nil, mapping.Prefetch{}, 0
	if h.noFast || len(req) < 12 || req[2]&0x80 != 0 || !h.parse(req, f) {
		return
	}
	q := mapping.Query{Source: src, ECS: f.q.opts.subnet().network()}
	f.warm = f.p.Prefetch(q, f.q.qtype == dns.TypeAAAA)
}

// prefetchBatch parses a batch of queries, reqs[i] from srcs[i] (nil:
// none), into parsed and reads what the fast path's decisions of them
// will read, in passes over the batch (the table entries, IPv6 clients'
// walks down the index a level at a time, then what the entries point
// to), so that the reads of the whole batch overlap
// (mapping.Prefetch). It folds what it read into *sink. It reports
// whether parsed holds the parse of every query: after a bug's panic the
// answers parse again, under appendResponse's recovery.
func (h *Handler) prefetchBatch(reqs [][]byte, srcs []netip.Addr, parsed []fastParsed, sink *uint32) (ok bool) {
	defer func() {
		if recover() != nil {
			h.Metrics.panicked()
			ok = false
		}
	}()
	for i, req := range reqs {
		h.prepare(req, srcs[i], &parsed[i])
	}
	sum := *sink
	for i := range parsed {
		sum += parsed[i].warm.Entries()
	}
	for more := true; more; {
		more = false
		for i := range parsed {
			v, deeper := parsed[i].warm.Deeper()
			sum += v
			more = more || deeper
		}
	}
	for i := range parsed {
		sum += parsed[i].warm.Rows()
	}
	*sink = sum
	return true
}

// releaseBatch forgets the properties and prefetches of a batch once it is
// answered and counted: they point into the snapshot they were parsed
// from, and kept, would keep an old map alive after a rebuild; and an
// answer's type left behind would be counted again after a batch whose
// prefetch failed.
func releaseBatch(parsed []fastParsed) {
	for i := range parsed {
		parsed[i].p, parsed[i].warm, parsed[i].answered = nil, mapping.Prefetch{}, 0
	}
}

// fastAnswer answers the query f parsed from req, appending to dst, when
// it has the fast path's shape. ok=false leaves the query to the general
// path, untouched: nothing counted, nothing rate-limited. ok=true with a
// nil response is a response rate limiting dropped.
func (h *Handler) fastAnswer(dst, req []byte, src netip.Addr, tcp bool, now time.Time, f *fastParsed) (resp []byte, qtype uint16, ok bool) {
	if !f.ok {
		return nil, 0, false
	}
	q, name, p := &f.q, f.name[:f.n], f.p
	v6 := q.qtype == dns.TypeAAAA
	ecs := q.opts.subnet()
	var d mapping.Decision
	p.DecidePrefetched(mapping.Query{Source: src, ECS: ecs.network()}, v6, &f.warm, &d)
	if d.N == 0 {
		return nil, 0, false // NODATA carries the SOA: the general path
	}
	verdict, reuse := 0, false
	now32 := uint32(now.Unix())
	if q.opts.cookie != nil && h.Cookies != nil {
		verdict, reuse = h.Cookies.check(q.opts.cookie, src, now32)
	}
	limit := maxTCPSize
	if !tcp {
		limit = minUDPSize
		if q.hasOPT {
			limit = max(minUDPSize, min(int(q.udpSize), advertisedUDPSize))
		}
		if verdict != cookieValid {
			limit = min(limit, maxAmplification*len(req))
		}
	}
	start := len(dst)
	out := append(dst, req[0], req[1],
		0x80|0x04|req[2]&0x01, // QR, AA, RD copied; opcode QUERY
		req[3]&0x10,           // CD copied; RA clear; NOERROR
		0, 1, 0, byte(d.N), 0, 0, 0, 0)
	if q.hasOPT {
		out[start+11] = 1
	}
	out = append(out, req[12:q.qEnd]...) // the question as asked: 0x20 case kept
	for _, e := range d.Edges[:d.N] {
		out = append(out, 0xc0, 12) // a pointer to the question's name
		out = binary.BigEndian.AppendUint16(out, q.qtype)
		out = append(out, 0, 1)
		out = binary.BigEndian.AppendUint32(out, p.TTL)
		if v6 {
			a := e.IPv6.As16()
			out = append(out, 0, 16)
			out = append(out, a[:]...)
		} else {
			a := e.IPv4.As4()
			out = append(out, 0, 4)
			out = append(out, a[:]...)
		}
	}
	if q.hasOPT {
		out = h.appendOPT(out, q, ecs, byte(d.ECSScope), src, reuse, now32, true)
	}
	if len(out)-start > limit {
		return nil, 0, false // the general path truncates properly
	}
	if !tcp && h.RRL != nil {
		action := rrlExempt
		if verdict != cookieValid && !h.RRL.exempted(src) {
			action = h.RRL.decide(classMapped, src, q.qtype, name, now)
		}
		h.Metrics.limited(action)
		switch action {
		case rrlDrop:
			h.Metrics.cookie(verdict)
			return nil, q.qtype, true
		case rrlSlip:
			// The header with TC and no answers, the question, and the
			// OPT with only the cookie: what slipped makes of the reply.
			out = append(out[:start], req[0], req[1], 0x80|0x04|0x02|req[2]&0x01, req[3]&0x10, 0, 1, 0, 0, 0, 0, 0, 0)
			if q.hasOPT {
				out[start+11] = 1
			}
			out = append(out, req[12:q.qEnd]...)
			if q.hasOPT {
				out = h.appendOPT(out, q, ecs, 0, src, reuse, now32, false)
			}
			h.Metrics.cookie(verdict)
			return out, q.qtype, true
		}
	}
	h.Metrics.cookie(verdict)
	h.decided(p, &d, src)
	return out, q.qtype, true
}

// appendOPT writes the response's OPT record for q: our UDP size, DO
// echoed, and the options in the order the general path writes them:
// NSID, cookie, ECS. A slipped response (all=false) carries the cookie
// only.
func (h *Handler) appendOPT(out []byte, q *fastQuery, ecs *clientSubnet, scope byte, src netip.Addr, reuse bool, now uint32, all bool) []byte {
	out = append(out, 0, 0, 41) // root, OPT
	out = binary.BigEndian.AppendUint16(out, advertisedUDPSize)
	flags := byte(0)
	if q.do {
		flags = 0x80
	}
	out = append(out, 0, 0, flags, 0) // extended rcode, version 0, DO
	lenAt := len(out)
	out = append(out, 0, 0)
	if all && q.opts.nsid && h.NodeID != "" {
		out = append(out, 0, optionNSID)
		out = binary.BigEndian.AppendUint16(out, uint16(len(h.NodeID)))
		out = append(out, h.NodeID...)
	}
	if q.opts.cookie != nil && h.Cookies != nil {
		out = append(out, 0, optionCookie, 0, clientCookieLen+serverCookieLen)
		out = h.Cookies.responseCookie(out, q.opts.cookie, reuse, src, now)
	}
	if all && ecs != nil {
		out = append(out, 0, optionECS)
		out = binary.BigEndian.AppendUint16(out, uint16(4+len(q.ecsRaw)))
		out = binary.BigEndian.AppendUint16(out, ecs.family)
		out = append(out, ecs.source, scope)
		out = append(out, q.ecsRaw...)
	}
	binary.BigEndian.PutUint16(out[lenAt:], uint16(len(out)-lenAt-2))
	return out
}

// parseFast reads a query of the fast path's shape, writing the lower-case
// presentation name ("shop.cdn.example.net.") into name. Anything it does
// not expect makes it return false, never an error: the general path will
// look at the packet again and answer it properly.
func parseFast(req []byte, name *[256]byte, q *fastQuery) (int, bool) {
	if req[2]&0x78 != 0 || // opcode QUERY only
		binary.BigEndian.Uint16(req[4:]) != 1 || binary.BigEndian.Uint16(req[6:]) != 0 ||
		binary.BigEndian.Uint16(req[8:]) != 0 || binary.BigEndian.Uint16(req[10:]) > 1 {
		return 0, false
	}
	off, n := 12, 0
	for {
		if off >= len(req) {
			return 0, false
		}
		l := int(req[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(req) || n+l+1 > 254 {
			return 0, false // a pointer, a bad label or a name too long
		}
		for _, c := range req[off : off+l] {
			switch {
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			case c == '.' || c == '\\' || c <= ' ' || c > '~':
				return 0, false // needs escaping: the general path
			}
			name[n] = c
			n++
		}
		name[n] = '.'
		n++
		off += l
	}
	if n == 0 || off+4 > len(req) {
		return 0, false
	}
	q.qtype = binary.BigEndian.Uint16(req[off:])
	if (q.qtype != dns.TypeA && q.qtype != dns.TypeAAAA) || binary.BigEndian.Uint16(req[off+2:]) != dns.ClassINET {
		return 0, false
	}
	off += 4
	q.qEnd = off
	if binary.BigEndian.Uint16(req[10:]) == 0 {
		return n, off == len(req)
	}
	// The OPT record: root name, type 41, then class (UDP size), TTL
	// (extended rcode, version, flags) and the options.
	if off+11 > len(req) || req[off] != 0 || binary.BigEndian.Uint16(req[off+1:]) != dns.TypeOPT {
		return 0, false
	}
	q.hasOPT = true
	q.udpSize = binary.BigEndian.Uint16(req[off+3:])
	if req[off+5] != 0 || req[off+6] != 0 { // extended rcode, version
		return 0, false
	}
	q.do = req[off+7]&0x80 != 0
	rdlen := int(binary.BigEndian.Uint16(req[off+9:]))
	rdata := req[off+11:]
	if len(rdata) != rdlen {
		return 0, false
	}
	if parseOptions(rdata, &q.opts) != nil || q.opts.unusual {
		return 0, false
	}
	if q.opts.hasECS {
		q.ecsRaw = ecsAddress(rdata)
	}
	return n, true
}

// ecsAddress finds the ECS option's address bytes in validated OPT RDATA.
func ecsAddress(rdata []byte) []byte {
	for len(rdata) >= 4 {
		code := binary.BigEndian.Uint16(rdata)
		l := int(binary.BigEndian.Uint16(rdata[2:]))
		if code == optionECS {
			return rdata[8 : 4+l]
		}
		rdata = rdata[4+l:]
	}
	return nil
}
