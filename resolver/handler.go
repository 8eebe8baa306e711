package resolver

import (
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/mapping"
)

// Sizes from RFC 6891 and the DNS flag day 2020 recommendation: 1232 bytes
// fits an IPv6 path MTU of 1280 without fragmentation.
const (
	advertisedUDPSize = 1232
	minUDPSize        = 512
	maxTCPSize        = dns.MaxMsgSize
)

// Handler answers DNS queries from the current snapshot. It works on wire
// bytes so that the same code serves UDP, TCP and the fuzzer. ServeDNS is
// safe for concurrent use.
type Handler struct {
	// NodeID answers NSID and CHAOS id.server; empty disables both.
	NodeID string
	// Snapshot is read once per query.
	Snapshot *atomic.Pointer[mapping.Snapshot]
	// Metrics may be nil.
	Metrics *Metrics
	// Demand, if not nil, is told of every property answer, for capacity.
	Demand DemandObserver
	// Activity, if not nil, is told of every property answer's first
	// edge, for the dashboard.
	Activity ActivityObserver
	// RRL, if not nil, limits the rate of UDP responses (rrl.go).
	RRL *RateLimiter
	// Cookies, if not nil, answers DNS Cookies (cookie.go); a query with
	// a valid server cookie is exempt from RRL and from the amplification
	// bound. Without it the option is checked for form and ignored.
	Cookies *CookieSecrets

	noFast bool             // tests: answer everything through the general path
	now    func() time.Time // tests: the clock of cookies and RRL; nil is time.Now
}

// maxAmplification bounds a UDP response without a valid server cookie to
// this many times the query's size: the answer a forger can aim at a victim
// is never much larger than what the forger sends. TCP cannot be forged.
const maxAmplification = 4

// DemandObserver counts answered queries per property and map unit. src is
// the query's source address (the resolver's, or the client's), so that
// what one source claims for other networks through ECS can be bounded. It
// is called per query, so it must be cheap and safe for concurrent use.
type DemandObserver interface {
	Observe(property string, unit netip.Prefix, src netip.Addr)
}

// ActivityObserver counts answers by the edge that answers first and the
// place the decision put the client (nil when unknown); client is the
// address that decided. It is called per query, so it must be cheap,
// allocation-free and safe for concurrent use.
type ActivityObserver interface {
	Answered(edge *mapping.Edge, place *mapping.Place, client netip.Addr)
}

// queryState is what the general path learns about a query beyond its
// answer: what response rate limiting and the size bound need.
type queryState struct {
	now    time.Time
	cookie int    // cookie verdict; 0 without a COOKIE option
	mapped bool   // the answer is a property's edges
	zone   string // the zone of a negative answer
}

// ServeDNS returns the response to req from src, or nil when nothing must be
// sent: a packet too short for a header, a response (QR=1), which would
// let anyone bounce traffic between two servers, or a response rate
// limiting drops.
func (h *Handler) ServeDNS(req []byte, src netip.Addr, tcp bool) []byte {
	return h.AppendResponse(nil, req, src, tcp)
}

// AppendResponse is ServeDNS appending to dst, so that a listener can reuse
// one buffer: the common query (A or AAAA of a property) is answered by the
// fast path without allocating; everything else goes through miekg/dns.
func (h *Handler) AppendResponse(dst, req []byte, src netip.Addr, tcp bool) []byte {
	start := time.Now()
	resp := h.appendResponse(dst, req, src, tcp, start, nil)
	if len(resp) > len(dst) {
		h.Metrics.answered(1, time.Since(start))
	}
	return resp
}

// appendResponse is AppendResponse for a query received at start, except
// that the caller records the answer's latency. f, if not nil, is what
// prefetch parsed of req, and then a fast-path answer is counted by the
// caller (f.answered, Metrics.observeFastBatch); nil parses it here.
func (h *Handler) appendResponse(dst, req []byte, src netip.Addr, tcp bool, start time.Time, f *fastParsed) (resp []byte) {
	if len(req) < 12 {
		h.Metrics.dropped(dropShort)
		return nil
	}
	if req[2]&0x80 != 0 {
		h.Metrics.dropped(dropResponse)
		return nil
	}
	defer func() {
		// A bug must cost one SERVFAIL, not the server.
		if r := recover(); r != nil {
			h.Metrics.panicked()
			m := headerOnly(req, dns.RcodeServerFailure)
			out, _ := m.Pack()
			resp = append(dst, out...)
		}
	}()
	st := queryState{now: start}
	if h.now != nil {
		st.now = h.now()
	}
	if !h.noFast {
		batched := f != nil
		if !batched {
			var parsed fastParsed
			f = &parsed
			h.parse(req, f)
		}
		if out, qtype, ok := h.fastAnswer(dst, req, src, tcp, st.now, f); ok {
			switch {
			case out == nil:
			case batched:
				f.answered = qtype
			default:
				h.Metrics.observeFast(qtype)
			}
			return out
		}
	}
	var q dns.Msg
	var reply *dns.Msg
	if err := q.Unpack(req); err != nil || !questionsWhole(req) {
		reply = headerOnly(req, dns.RcodeFormatError)
	} else {
		reply = h.answer(&q, req, src, tcp, &st)
	}
	bound := 0
	if !tcp {
		switch h.limit(reply, src, &st) {
		case rrlDrop:
			return nil
		case rrlSlip:
			reply = slipped(reply)
		}
		if st.cookie != cookieValid {
			bound = maxAmplification * len(req)
		}
	}
	resp = append(dst, pack(reply, &q, tcp, bound)...)
	h.Metrics.observe(&q, reply)
	return resp
}

// questionsWhole reports whether every question of a message miekg/dns
// unpacked has its QTYPE and QCLASS: miekg/dns reads a question cut after
// its name or its QTYPE as if the rest were zero, and class 0 would be
// answered REFUSED instead of FORMERR.
func questionsWhole(msg []byte) bool {
	off := 12
	for range binary.BigEndian.Uint16(msg[4:]) {
		if off = skipName(msg, off); off < 0 || off+4 > len(msg) {
			return false
		}
		off += 4
	}
	return true
}

// limit asks response rate limiting about a general-path UDP reply.
func (h *Handler) limit(reply *dns.Msg, src netip.Addr, st *queryState) int {
	if h.RRL == nil {
		return rrlPass
	}
	if st.cookie == cookieValid || h.RRL.exempted(src) {
		h.Metrics.limited(rrlExempt)
		return rrlPass
	}
	class, qtype, name := classError, uint16(0), ""
	switch {
	case reply.Rcode == dns.RcodeSuccess && len(reply.Answer) > 0 && len(reply.Question) == 1:
		class, qtype, name = classAnswer, reply.Question[0].Qtype, strings.ToLower(reply.Question[0].Name)
		if st.mapped {
			class = classMapped
		}
	case reply.Rcode == dns.RcodeSuccess && st.zone != "":
		class, name = classNoData, st.zone
	case reply.Rcode == dns.RcodeNameError:
		class, name = classNXDomain, st.zone
	}
	action := h.RRL.decide(class, src, qtype, []byte(name), st.now)
	h.Metrics.limited(action)
	return action
}

// slipped is what goes out instead of a rate-limited reply every slip-th
// time: the header with TC set and the question, so that a real resolver
// asks again over TCP, where no forger can follow; and the server cookie,
// with which it may ask over UDP unlimited.
func slipped(m *dns.Msg) *dns.Msg {
	t := &dns.Msg{MsgHdr: m.MsgHdr, Question: m.Question}
	t.Truncated = true
	if opt := m.IsEdns0(); opt != nil {
		o := &dns.OPT{Hdr: opt.Hdr}
		for _, e := range opt.Option {
			if e.Option() == dns.EDNS0COOKIE {
				o.Option = append(o.Option, e)
			}
		}
		t.Extra = []dns.RR{o}
	}
	return t
}

// headerOnly is the answer to a query whose body could not be read: its ID
// and opcode back, nothing else we cannot trust.
func headerOnly(req []byte, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.Id = uint16(req[0])<<8 | uint16(req[1])
	m.Opcode = int(req[2]>>3) & 0xf
	m.RecursionDesired = req[2]&1 != 0
	m.Response = true
	m.Rcode = rcode
	return m
}

// pack compresses the response and limits it to what the transport and the
// client allow, setting TC when the answer had to be cut (RFC 1035 4.2.1,
// RFC 6891 6.2.5), and to bound bytes when bound is not 0.
func pack(m, q *dns.Msg, tcp bool, bound int) []byte {
	size := minUDPSize
	if tcp {
		size = maxTCPSize
	} else if opt := q.IsEdns0(); opt != nil && m.IsEdns0() != nil {
		size = max(minUDPSize, min(int(opt.UDPSize()), advertisedUDPSize))
	}
	fit(m, size, bound)
	out, err := m.Pack()
	if err != nil {
		// Only a bug gets here; answer SERVFAIL rather than nothing.
		m = &dns.Msg{MsgHdr: m.MsgHdr}
		m.Rcode = dns.RcodeServerFailure
		m.Question = q.Question
		out, _ = m.Pack()
	}
	return out
}

// fit makes m, compressed, at most size bytes (the transport's limit) and,
// when bound is not 0, at most bound (the amplification bound). The
// transport's limit truncates as RFC 1035 and 6891 do: as many records as
// fit, TC set. Under the bound, additional records (glue) go first without
// TC, since the answer is whole without them; then answer and authority
// records from the end, with TC; then the options a response adds (NSID,
// ECS), keeping the cookie.
func fit(m *dns.Msg, size, bound int) {
	m.Compress = true
	if bound == 0 || bound >= size {
		if m.Len() > size {
			m.Truncate(size)
			m.Compress = true // Truncate clears it when the message fits uncompressed
		}
		return
	}
	if m.Len() <= bound {
		return
	}
	opt := m.IsEdns0()
	m.Extra = m.Extra[:0]
	if opt != nil {
		m.Extra = append(m.Extra, opt)
	}
	if m.Len() <= bound {
		return
	}
	// Keep the longest run of answer, then authority records that fits,
	// found by bisection: a name's static records are as many as the
	// operator wrote, and measuring the message after each one dropped
	// would cost a forged flood's every query time squared in them.
	answer, ns := m.Answer, m.Ns
	keep := func(n int) {
		m.Answer, m.Ns = answer[:min(n, len(answer))], ns[:max(0, n-len(answer))]
	}
	all := len(answer) + len(ns)
	n := sort.Search(all+1, func(n int) bool {
		keep(n)
		return m.Len() > bound
	}) - 1
	if n >= 0 {
		keep(n)
		m.Truncated = true
		return
	}
	keep(0)
	m.Truncated = all > 0
	if opt == nil {
		return // a header and question longer than 4x the query: cannot be
	}
	cookie := opt.Option[:0]
	for _, e := range opt.Option {
		if e.Option() == dns.EDNS0COOKIE {
			cookie = append(cookie, e)
		}
	}
	opt.Option = cookie
}

func (h *Handler) answer(q *dns.Msg, raw []byte, src netip.Addr, tcp bool, st *queryState) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = false
	m.RecursionAvailable = false

	if q.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(q.Question) != 1 || len(q.Answer) != 0 || len(q.Ns) != 0 {
		m.Rcode = dns.RcodeFormatError
		return m
	}

	var opts ednsOptions
	reqOPT := q.IsEdns0()
	if reqOPT != nil {
		if countOPT(q) > 1 {
			m.Rcode = dns.RcodeFormatError
			return m
		}
		resOPT := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		resOPT.SetUDPSize(advertisedUDPSize)
		resOPT.SetDo(reqOPT.Do())
		m.Extra = append(m.Extra, resOPT)
		if reqOPT.Version() != 0 {
			// RFC 6891 6.1.3: BADVERS, no answer, our version in the OPT.
			m.Rcode = dns.RcodeBadVers
			return m
		}
		rdata, _ := findOPT(raw)
		if err := parseOptions(rdata, &opts); err != nil {
			m.Rcode = dns.RcodeFormatError
			return m
		}
		if opts.nsid && h.NodeID != "" {
			resOPT.Option = append(resOPT.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: hex.EncodeToString([]byte(h.NodeID))})
		}
		if opts.cookie != nil && h.Cookies != nil {
			now := uint32(st.now.Unix())
			var reuse bool
			st.cookie, reuse = h.Cookies.check(opts.cookie, src, now)
			h.Metrics.cookie(st.cookie)
			c := h.Cookies.responseCookie(nil, opts.cookie, reuse, src, now)
			resOPT.Option = append(resOPT.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: hex.EncodeToString(c)})
		}
	}
	// Every answer from here on echoes the ECS option; all but a
	// property's addresses are the same for every client: scope 0.
	scope := 0
	defer func() { echoECS(m, opts.subnet(), scope) }()

	question := q.Question[0]
	switch question.Qclass {
	case dns.ClassINET:
	case dns.ClassCHAOS:
		h.chaos(m, question)
		return m
	default:
		m.Rcode = dns.RcodeRefused
		return m
	}

	snap := h.Snapshot.Load()
	name := strings.ToLower(question.Name)
	if snap == nil || !snap.InZone(name) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	zone := snap.Zone()
	st.zone = zone.Name
	node := snap.Lookup(name)
	if node == nil {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, negativeSOA(zone))
		return m
	}
	switch question.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		// Zone transfers are not offered; the configuration reaches every
		// name server through the admin API instead.
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
		return m
	case dns.TypeANY:
		// RFC 8482: one synthesized HINFO instead of everything we have.
		m.Answer = append(m.Answer, &dns.HINFO{Hdr: header(question.Name, dns.TypeHINFO, zone.TTL), Cpu: "RFC8482"})
		return m
	}
	scope = h.data(m, snap, node, question.Name, question.Qtype, mapping.Query{Source: src, ECS: opts.subnet().network()}, st)
	return m
}

// data answers qtype at node, whose owner name is owner, into m, and
// returns the ECS scope of the answer. A CNAME is followed inside the zone
// as RFC 1034 4.3.2 says (step 3.a): the chain goes into the answer, then
// what its last name has; the rcode is the last name's (RFC 6604). A
// target outside the zone ends the answer there, for the resolver to
// follow. Build has refused chains that loop or are longer than
// mapping.MaxCNAMEChain, so the loop ends; the bound is kept all the same.
func (h *Handler) data(m *dns.Msg, snap *mapping.Snapshot, node *mapping.Name, owner string, qtype uint16, q mapping.Query, st *queryState) (scope int) {
	zone := snap.Zone()
	for hops := 0; qtype != dns.TypeCNAME; hops++ {
		cname := node.RRset(mapping.TypeCNAME)
		if cname == nil {
			break
		}
		m.Answer = append(m.Answer, staticRecords(cname, owner)...)
		owner = cname.Data[0].Target
		if !snap.InZone(owner) || hops == mapping.MaxCNAMEChain {
			return 0
		}
		if node = snap.Lookup(owner); node == nil {
			m.Rcode = dns.RcodeNameError
			m.Ns = append(m.Ns, negativeSOA(zone))
			return 0
		}
	}
	had := len(m.Answer)
	switch v6 := qtype == dns.TypeAAAA; {
	case node.Apex && qtype == dns.TypeSOA:
		m.Answer = append(m.Answer, soa(zone, owner, zone.TTL))
	case node.Apex && qtype == dns.TypeNS:
		m.Answer = append(m.Answer, nsRecords(zone, owner)...)
		m.Extra = append(glue(snap, zone), m.Extra...)
	case node.Property != nil && (qtype == dns.TypeA || v6):
		scope = h.edgeAnswer(m, node.Property, owner, qtype, q)
		st.mapped = true
	case node.Host != nil && (qtype == dns.TypeA || v6):
		m.Answer = append(m.Answer, hostAddress(node.Host, owner, qtype, zone.NSTTL)...)
	default:
		if set := node.RRset(mapping.RecordType(dns.TypeToString[qtype])); set != nil {
			m.Answer = append(m.Answer, staticRecords(set, owner)...)
		}
	}
	if len(m.Answer) == had {
		// NODATA (RFC 2308 2.2), after the aliases that led here if any.
		m.Ns = append(m.Ns, negativeSOA(zone))
	}
	return scope
}

// edgeAnswer fills in the best edges and returns the ECS scope the answer
// carries.
func (h *Handler) edgeAnswer(m *dns.Msg, p *mapping.ServedProperty, owner string, qtype uint16, q mapping.Query) int {
	v6 := qtype == dns.TypeAAAA
	var d mapping.Decision
	p.DecideQuery(q, v6, &d)
	h.decided(p, &d, q.Source)
	for _, e := range d.Edges[:d.N] {
		hdr := header(owner, qtype, p.TTL)
		if v6 {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(e.IPv6.AsSlice())})
		} else {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(e.IPv4.AsSlice())})
		}
	}
	return d.ECSScope
}

// decided counts what a decision means beyond its answer: demand for
// capacity, activity, and answers given although every edge was down.
func (h *Handler) decided(p *mapping.ServedProperty, d *mapping.Decision, src netip.Addr) {
	if d.FailOpen {
		h.Metrics.failedOpen()
	}
	if h.Demand != nil && d.Unit.IsValid() && p.HasCapacityLimits() {
		h.Demand.Observe(p.Name, d.Unit, src)
	}
	if h.Activity != nil && d.N > 0 {
		h.Activity.Answered(d.Edges[0], d.Place, d.Client)
	}
}

// echoECS returns the client's option with the scope the answer is valid
// for (RFC 7871 7.2.1); mapping.DecideQuery says which.
func echoECS(m *dns.Msg, ecs *clientSubnet, scope int) {
	opt := m.IsEdns0()
	if ecs == nil || opt == nil {
		return
	}
	e := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: ecs.family, SourceNetmask: ecs.source, SourceScope: uint8(scope)}
	if ecs.prefix.IsValid() {
		e.Address = net.IP(ecs.prefix.Addr().AsSlice())
	} else {
		e.Address = net.IPv4zero
	}
	opt.Option = append(opt.Option, e)
}

func countOPT(q *dns.Msg) int {
	n := 0
	for _, rr := range q.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			n++
		}
	}
	return n
}

// chaos answers the CHAOS-class identity queries operators use to see which
// node of an anycast set answered.
func (h *Handler) chaos(m *dns.Msg, question dns.Question) {
	name := strings.ToLower(question.Name)
	if h.NodeID == "" || (name != "id.server." && name != "hostname.bind.") {
		m.Rcode = dns.RcodeRefused
		return
	}
	m.Authoritative = true
	if question.Qtype == dns.TypeTXT || question.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeTXT, Class: dns.ClassCHAOS},
			Txt: []string{h.NodeID},
		})
	}
}
