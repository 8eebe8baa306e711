package resolver

import (
	"encoding/hex"
	"net"
	"net/netip"
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

	noFast bool // tests: answer everything through the general path
}

// DemandObserver counts answered queries per property and map unit. src is
// the query's source address (the resolver's, or the client's), so that
// what one source claims for other networks through ECS can be bounded. It
// is called per query, so it must be cheap and safe for concurrent use.
type DemandObserver interface {
	Observe(property string, unit netip.Prefix, src netip.Addr)
}

// ServeDNS returns the response to req from src, or nil when nothing must be
// sent: a packet too short for a header, or a response (QR=1), which would
// let anyone bounce traffic between two servers.
func (h *Handler) ServeDNS(req []byte, src netip.Addr, tcp bool) []byte {
	return h.AppendResponse(nil, req, src, tcp)
}

// AppendResponse is ServeDNS appending to dst, so that a listener can reuse
// one buffer: the common query (A or AAAA of a property) is answered by the
// fast path without allocating; everything else goes through miekg/dns.
func (h *Handler) AppendResponse(dst, req []byte, src netip.Addr, tcp bool) (resp []byte) {
	start := time.Now()
	if len(req) < 12 || req[2]&0x80 != 0 {
		h.Metrics.dropped()
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
	if !h.noFast {
		if out, qtype, ok := h.fastAnswer(dst, req, src, tcp); ok {
			h.Metrics.observeFast(qtype, start)
			return out
		}
	}
	var q dns.Msg
	var reply *dns.Msg
	if err := q.Unpack(req); err != nil {
		reply = headerOnly(req, dns.RcodeFormatError)
	} else {
		reply = h.answer(&q, req, src, tcp)
	}
	resp = append(dst, pack(reply, &q, tcp)...)
	h.Metrics.observe(&q, reply, start)
	return resp
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

// pack limits the response to what the transport and the client allow,
// setting TC when the answer had to be cut (RFC 1035 4.2.1, RFC 6891 6.2.5).
func pack(m, q *dns.Msg, tcp bool) []byte {
	size := minUDPSize
	if tcp {
		size = maxTCPSize
	} else if opt := q.IsEdns0(); opt != nil && m.IsEdns0() != nil {
		size = max(minUDPSize, min(int(opt.UDPSize()), advertisedUDPSize))
	}
	m.Truncate(size)
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

func (h *Handler) answer(q *dns.Msg, raw []byte, src netip.Addr, tcp bool) *dns.Msg {
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
	}

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
	node := snap.Lookup(name)
	scope := 0
	defer func() { echoECS(m, opts.subnet(), scope) }()
	if node == nil {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, negativeSOA(zone))
		return m
	}
	switch qt := question.Qtype; {
	case qt == dns.TypeAXFR || qt == dns.TypeIXFR:
		// Zone transfers are not offered; the configuration reaches every
		// name server through the admin API instead.
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
	case qt == dns.TypeANY:
		// RFC 8482: one synthesized HINFO instead of everything we have.
		m.Answer = append(m.Answer, &dns.HINFO{Hdr: header(question.Name, dns.TypeHINFO, zoneTTL), Cpu: "RFC8482"})
	case node.Apex && qt == dns.TypeSOA:
		m.Answer = append(m.Answer, soa(zone, question.Name, zoneTTL))
	case node.Apex && qt == dns.TypeNS:
		m.Answer = append(m.Answer, nsRecords(zone, question.Name)...)
		m.Extra = append(glue(snap, zone), m.Extra...)
	case node.Property != nil && (qt == dns.TypeA || qt == dns.TypeAAAA):
		scope = h.edgeAnswer(m, snap, node.Property, question, src, opts.subnet())
	case node.Host != nil && (qt == dns.TypeA || qt == dns.TypeAAAA):
		m.Answer = append(m.Answer, hostAddress(node.Host, question.Name, qt)...)
	}
	if len(m.Answer) == 0 && m.Rcode == dns.RcodeSuccess {
		m.Ns = append(m.Ns, negativeSOA(zone))
	}
	return m
}

// edgeAnswer fills in the best edges and returns the ECS scope the answer
// depends on.
func (h *Handler) edgeAnswer(m *dns.Msg, snap *mapping.Snapshot, p *mapping.Property, question dns.Question, src netip.Addr, ecs *clientSubnet) int {
	v6 := question.Qtype == dns.TypeAAAA
	var d mapping.Decision
	snap.Decide(p, clientAddr(src, ecs), v6, &d)
	h.decided(p, &d, src)
	for _, e := range d.Edges[:d.N] {
		hdr := header(question.Name, question.Qtype, p.TTL)
		if v6 {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IP(e.IPv6.AsSlice())})
		} else {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IP(e.IPv4.AsSlice())})
		}
	}
	return ecsScope(&d, ecs)
}

// decided counts what a decision means beyond its answer: demand for
// capacity, and answers given although every edge was down.
func (h *Handler) decided(p *mapping.Property, d *mapping.Decision, src netip.Addr) {
	if d.FailOpen {
		h.Metrics.failedOpen()
	}
	if h.Demand != nil && d.Unit.IsValid() && p.HasCapacityLimits() {
		h.Demand.Observe(p.Name, d.Unit, src)
	}
}

// ecsScope is the SCOPE PREFIX-LENGTH for an answer decided by d.
func ecsScope(d *mapping.Decision, ecs *clientSubnet) int {
	if !usesECS(ecs) {
		return 0
	}
	scope := d.Scope
	if ecs.family == 2 && ecs.prefix.Addr().Is4In6() && scope > 0 {
		// clientAddr unmapped the address, so the scope is an IPv4
		// length; count it in bits of the option's family, or a /24
		// would claim the answer for all of ::/24.
		scope += 96
	}
	// Never claim more than the resolver told us (RFC 7871 7.2.1).
	return min(scope, int(ecs.source))
}

// clientAddr is the address to map: the ECS network when the resolver sent
// a usable one, else the resolver itself. Private networks (RFC 1918, RFC
// 4193) say nothing about where a user is, so RFC 7871 section 7.1.2 lets
// us fall back to the source address.
func clientAddr(src netip.Addr, ecs *clientSubnet) netip.Addr {
	if usesECS(ecs) {
		// Unmapped, so that an IPv4-mapped ECS address (family 2) finds
		// the IPv4 targets and GeoIP networks it belongs to.
		return ecs.prefix.Addr().Unmap()
	}
	return src.Unmap()
}

func usesECS(ecs *clientSubnet) bool {
	return ecs != nil && ecs.source > 0 && ecs.prefix.IsValid() && !ecs.prefix.Addr().IsPrivate()
}

// echoECS returns the client's option with the scope we used (RFC 7871
// 7.2.1). Answers that do not depend on the client say scope 0.
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
