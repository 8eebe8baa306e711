package resolver

import (
	"encoding/binary"
	"net/netip"
)

// EDNS option codes this server acts on.
const (
	optionNSID    = 3  // RFC 5001
	optionECS     = 8  // RFC 7871
	optionCookie  = 10 // RFC 7873
	optionPadding = 12 // RFC 7830
)

// optionError is a malformed EDNS option: the query is answered FORMERR.
type optionError string

func (e optionError) Error() string { return string(e) }

const (
	errECSLength    optionError = "ecs: address octets do not match the source prefix"
	errECSFamily    optionError = "ecs: unknown address family"
	errECSPrefix    optionError = "ecs: source prefix longer than the address"
	errECSTrailing  optionError = "ecs: address bits set beyond the source prefix"
	errECSDuplicate optionError = "ecs: more than one option"
	errOPTTruncated optionError = "edns: option runs past the OPT record"
)

// clientSubnet is a validated ECS option from a query.
type clientSubnet struct {
	family uint16
	source uint8 // SOURCE PREFIX-LENGTH
	// prefix is the masked client network; invalid for family 0 (the form
	// dig sends for +subnet=0).
	prefix netip.Prefix
}

// network is the client network for mapping.Query: the zero Prefix when
// there is no option, or it is of family 0.
func (cs *clientSubnet) network() netip.Prefix {
	if cs == nil {
		return netip.Prefix{}
	}
	return cs.prefix
}

// ednsOptions is what a query's OPT record asks of us. The subnet is held
// by value: a pointer into the struct itself would move it to the heap.
type ednsOptions struct {
	ecs    clientSubnet
	hasECS bool
	nsid   bool
	// cookie is the COOKIE option's body (length checked), nil without
	// one; it points into the query.
	cookie []byte
	// unusual is set by an option other than NSID, ECS, cookie and
	// padding: miekg/dns validates some (keepalive, expire, ...), so the
	// fast path leaves such queries to the general path.
	unusual bool
}

// subnet is the query's ECS option, or nil.
func (o *ednsOptions) subnet() *clientSubnet {
	if !o.hasECS {
		return nil
	}
	return &o.ecs
}

// parseOptions reads the options of an OPT record's RDATA. miekg/dns parses
// ECS leniently (it pads or cuts the address), but RFC 7871 section 6 wants
// FORMERR for an address of the wrong length or with bits set beyond the
// source prefix, so the raw bytes are checked here.
func parseOptions(rdata []byte, o *ednsOptions) error {
	for len(rdata) > 0 {
		if len(rdata) < 4 {
			return errOPTTruncated
		}
		code := binary.BigEndian.Uint16(rdata)
		n := int(binary.BigEndian.Uint16(rdata[2:]))
		if len(rdata) < 4+n {
			return errOPTTruncated
		}
		body := rdata[4 : 4+n]
		rdata = rdata[4+n:]
		switch code {
		case optionPadding:
		case optionCookie:
			if o.cookie != nil {
				return errCookieDuplicate
			}
			if err := parseCookie(body); err != nil {
				return err
			}
			o.cookie = body
		case optionNSID:
			o.nsid = true
		case optionECS:
			if o.hasECS {
				return errECSDuplicate
			}
			if err := parseECS(body, &o.ecs); err != nil {
				return err
			}
			o.hasECS = true
		default:
			o.unusual = true
		}
	}
	return nil
}

func parseECS(b []byte, cs *clientSubnet) error {
	if len(b) < 4 {
		return errECSLength
	}
	cs.family = binary.BigEndian.Uint16(b)
	cs.source = b[2]
	// b[3] is SCOPE PREFIX-LENGTH, which a query must leave 0; tolerated.
	addr := b[4:]
	var max int
	switch cs.family {
	case 0:
		if cs.source != 0 || len(addr) != 0 {
			return errECSFamily
		}
		cs.prefix = netip.Prefix{}
		return nil
	case 1:
		max = 32
	case 2:
		max = 128
	default:
		return errECSFamily
	}
	// A scope longer than the address is malformed (miekg/dns refuses it
	// too), even though a query's scope is otherwise ignored.
	if int(cs.source) > max || int(b[3]) > max {
		return errECSPrefix
	}
	if len(addr) != (int(cs.source)+7)/8 {
		return errECSLength
	}
	var full [16]byte
	copy(full[:], addr)
	if rem := cs.source % 8; rem != 0 && addr[len(addr)-1]&(0xff>>rem) != 0 {
		return errECSTrailing
	}
	a := netip.AddrFrom16(full)
	if cs.family == 1 {
		a = netip.AddrFrom4([4]byte(full[:4]))
	}
	cs.prefix = netip.PrefixFrom(a, int(cs.source))
	return nil
}

// findOPT returns the RDATA of the OPT record of a message that miekg/dns
// has already unpacked without error, so the walk needs no bounds surprises
// beyond a defensive check.
func findOPT(msg []byte) ([]byte, bool) {
	if len(msg) < 12 {
		return nil, false
	}
	qd := int(binary.BigEndian.Uint16(msg[4:]))
	rrs := int(binary.BigEndian.Uint16(msg[6:])) + int(binary.BigEndian.Uint16(msg[8:]))
	ar := int(binary.BigEndian.Uint16(msg[10:]))
	off := 12
	for range qd {
		if off = skipName(msg, off); off < 0 || off+4 > len(msg) {
			return nil, false
		}
		off += 4
	}
	for i := range rrs + ar {
		if off = skipName(msg, off); off < 0 || off+10 > len(msg) {
			return nil, false
		}
		typ := binary.BigEndian.Uint16(msg[off:])
		n := int(binary.BigEndian.Uint16(msg[off+8:]))
		off += 10
		if off+n > len(msg) {
			return nil, false
		}
		if typ == 41 && i >= rrs {
			return msg[off : off+n], true
		}
		off += n
	}
	return nil, false
}

// skipName returns the offset after the (possibly compressed) name at off,
// or -1.
func skipName(msg []byte, off int) int {
	for off < len(msg) {
		l := int(msg[off])
		switch {
		case l == 0:
			return off + 1
		case l&0xc0 == 0xc0:
			return off + 2
		case l&0xc0 != 0:
			return -1
		}
		off += 1 + l
	}
	return -1
}
