package resolver

import (
	"net"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/mapping"
)

// Zone-level timers. Apex records change rarely, so they get an hour; a
// negative answer is cached for a minute, short enough that a newly added
// property is reachable soon after it is created.
const (
	zoneTTL     = 3600
	soaRefresh  = 3600
	soaRetry    = 600
	soaExpire   = 1209600
	negativeTTL = 60
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
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  negativeTTL,
	}
}

// negativeSOA goes into the authority section of NXDOMAIN and NODATA with
// the TTL RFC 2308 section 3 asks for: min(SOA TTL, SOA MINIMUM).
func negativeSOA(z *mapping.Zone) dns.RR {
	return soa(z, z.Name, min(zoneTTL, negativeTTL))
}

func nsRecords(z *mapping.Zone, owner string) []dns.RR {
	rrs := make([]dns.RR, 0, len(z.NameServers))
	for _, ns := range z.NameServers {
		rrs = append(rrs, &dns.NS{Hdr: header(owner, dns.TypeNS, zoneTTL), Ns: ns.Name})
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
			rrs = append(rrs, hostAddress(ns, ns.Name, dns.TypeA)...)
			rrs = append(rrs, hostAddress(ns, ns.Name, dns.TypeAAAA)...)
		}
	}
	return rrs
}

func hostAddress(ns *mapping.NameServer, owner string, qtype uint16) []dns.RR {
	switch {
	case qtype == dns.TypeA && ns.IPv4.IsValid():
		return []dns.RR{&dns.A{Hdr: header(owner, dns.TypeA, zoneTTL), A: net.IP(ns.IPv4.AsSlice())}}
	case qtype == dns.TypeAAAA && ns.IPv6.IsValid():
		return []dns.RR{&dns.AAAA{Hdr: header(owner, dns.TypeAAAA, zoneTTL), AAAA: net.IP(ns.IPv6.AsSlice())}}
	}
	return nil
}
