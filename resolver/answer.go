package resolver

import (
	"net"
	"strings"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/mapping"
)

func header(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// soa builds the zone's SOA; MNAME is the first name server.
func soa(z *mapping.Zone, owner string, ttl uint32) *dns.SOA {
	mname := z.Name
	if len(z.NameServers) > 0 {
		mname = z.NameServers[0].Name
	}
	return &dns.SOA{
		Hdr:     header(owner, dns.TypeSOA, ttl),
		Ns:      mname,
		Mbox:    z.Contact,
		Serial:  z.Serial,
		Refresh: z.Refresh,
		Retry:   z.Retry,
		Expire:  z.Expire,
		Minttl:  z.Minimum,
	}
}

// negativeSOA goes into the authority section of NXDOMAIN and NODATA with
// the TTL RFC 2308 section 3 asks for: min(SOA TTL, SOA MINIMUM).
func negativeSOA(z *mapping.Zone) dns.RR {
	return soa(z, z.Name, z.NegativeTTL())
}

func nsRecords(z *mapping.Zone, owner string) []dns.RR {
	rrs := make([]dns.RR, 0, len(z.NameServers))
	for _, ns := range z.NameServers {
		rrs = append(rrs, &dns.NS{Hdr: header(owner, dns.TypeNS, z.NSTTL), Ns: ns.Name})
	}
	return rrs
}

// glue is the addresses of the in-zone name servers, without which a
// resolver could not reach a zone whose servers are named inside it.
func glue(snap *mapping.Snapshot, z *mapping.Zone) []dns.RR {
	var rrs []dns.RR
	for i := range z.NameServers {
		ns := &z.NameServers[i]
		if snap.InZone(ns.Name) {
			rrs = append(rrs, hostAddress(ns, ns.Name, dns.TypeA, z.NSTTL)...)
			rrs = append(rrs, hostAddress(ns, ns.Name, dns.TypeAAAA, z.NSTTL)...)
		}
	}
	return rrs
}

// hostAddress is a name server's address of the asked family, with the NS
// records' TTL: a resolver that holds the NS needs the address as long.
func hostAddress(ns *mapping.NameServer, owner string, qtype uint16, ttl uint32) []dns.RR {
	switch {
	case qtype == dns.TypeA && ns.IPv4.IsValid():
		return []dns.RR{&dns.A{Hdr: header(owner, dns.TypeA, ttl), A: net.IP(ns.IPv4.AsSlice())}}
	case qtype == dns.TypeAAAA && ns.IPv6.IsValid():
		return []dns.RR{&dns.AAAA{Hdr: header(owner, dns.TypeAAAA, ttl), AAAA: net.IP(ns.IPv6.AsSlice())}}
	}
	return nil
}

// staticRecords are the static records of set as answers owned by owner.
func staticRecords(set *mapping.RRset, owner string) []dns.RR {
	rrs := make([]dns.RR, 0, len(set.Data))
	for i := range set.Data {
		d := &set.Data[i]
		var rr dns.RR
		switch set.Type {
		case mapping.TypeA:
			rr = &dns.A{A: net.IP(d.Addr.AsSlice())}
		case mapping.TypeAAAA:
			rr = &dns.AAAA{AAAA: net.IP(d.Addr.AsSlice())}
		case mapping.TypeCNAME:
			rr = &dns.CNAME{Target: d.Target}
		case mapping.TypeMX:
			rr = &dns.MX{Preference: d.Pref, Mx: d.Target}
		case mapping.TypeTXT:
			txt := make([]string, len(d.Text))
			for j, s := range d.Text {
				txt[j] = escapeText(s)
			}
			rr = &dns.TXT{Txt: txt}
		case mapping.TypeCAA:
			rr = &dns.CAA{Flag: d.Flags, Tag: d.Tag, Value: escapeText(d.Text[0])}
		default:
			continue
		}
		*rr.Header() = header(owner, dns.StringToType[string(set.Type)], set.TTL)
		rrs = append(rrs, rr)
	}
	return rrs
}

// escapeText is raw text as miekg/dns packs a character-string: it reads
// "\\" and "\DDD" as escapes, so a backslash of the text is doubled.
func escapeText(s string) string { return strings.ReplaceAll(s, `\`, `\\`) }
