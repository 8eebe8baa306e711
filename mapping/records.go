package mapping

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The zone's own content besides the map: its TTLs and SOA timers, and the
// static records an operator publishes (TXT for ACME challenges and domain
// verification, CAA for the CDN's certificates, MX, and addresses or
// aliases of names that are not properties).

// Timers are a zone's TTLs and SOA timers, in seconds. A zero field is its
// default (DefaultTimers); Build fills them in, so a snapshot's zone has
// every one set.
type Timers struct {
	// TTL is the TTL of the SOA record and of static records that set none.
	TTL uint32
	// NSTTL is the TTL of the apex NS records and of the name servers'
	// addresses (glue), which a resolver needs for as long as the NS.
	NSTTL uint32
	// Refresh, Retry and Expire are the SOA's timers for secondaries.
	// edgemap offers no zone transfers, so only checkers (Zonemaster) and
	// a secondary fed by other means read them.
	Refresh, Retry, Expire uint32
	// Minimum is the SOA MINIMUM: how long resolvers cache NXDOMAIN and
	// NODATA (RFC 2308: the negative TTL is min(SOA TTL, MINIMUM)).
	Minimum uint32
}

// DefaultTimers are the timers of a zone that sets none. Zonemaster, which
// registries run on delegations, accepts them without a notice: refresh at
// least 4 h (ZONE02), retry at least 1 h (ZONE04) and below refresh
// (ZONE03), expire at least 7 days and above refresh (ZONE05), minimum 5 min
// to 1 day (ZONE06). Expire is 14 days, RFC 1912's two to four weeks. A
// negative TTL of 5 min means a new property or record may be unknown to
// a resolver that asked for it just before for up to 5 min; the apex
// records change rarely and get an hour.
var DefaultTimers = Timers{TTL: 3600, NSTTL: 3600, Refresh: 14400, Retry: 3600, Expire: 1209600, Minimum: 300}

// MaxRecordTTL bounds every TTL of the zone: a day. Resolvers cap what
// they cache at about that (Unbound's cache-max-ttl is a day), so a longer
// TTL only delays a change.
const MaxRecordTTL = 86400

// maxSOATimer is the largest SOA timer: 2^31-1, the largest TTL RFC 2181
// section 8 allows, since timers are compared with TTLs.
const maxSOATimer = 1<<31 - 1

// WithDefaults is t with every zero field replaced by its default.
func (t Timers) WithDefaults() Timers {
	d := DefaultTimers
	or := func(v, def uint32) uint32 {
		if v == 0 {
			return def
		}
		return v
	}
	return Timers{TTL: or(t.TTL, d.TTL), NSTTL: or(t.NSTTL, d.NSTTL), Refresh: or(t.Refresh, d.Refresh),
		Retry: or(t.Retry, d.Retry), Expire: or(t.Expire, d.Expire), Minimum: or(t.Minimum, d.Minimum)}
}

// Check checks timers with their defaults filled in; errors name the field
// under prefix ("zone.refresh"). It refuses what makes no sense, not what
// Zonemaster only advises against: a lab may want short timers.
func (t Timers) Check(prefix string) error {
	t = t.WithDefaults()
	at := func(f string) string {
		if prefix == "" {
			return f
		}
		return prefix + "." + f
	}
	for _, c := range []struct {
		field  string
		v, max uint32
	}{
		{"ttl", t.TTL, MaxRecordTTL}, {"ns_ttl", t.NSTTL, MaxRecordTTL}, {"minimum", t.Minimum, MaxRecordTTL},
		{"refresh", t.Refresh, maxSOATimer}, {"retry", t.Retry, maxSOATimer}, {"expire", t.Expire, maxSOATimer},
	} {
		if c.v > c.max {
			return FieldErrorf(at(c.field), "%d is above %d seconds", c.v, c.max)
		}
	}
	switch {
	case t.Retry >= t.Refresh:
		return FieldErrorf(at("retry"), "%d is not shorter than refresh %d: a secondary retries a failed refresh before the next one is due (RFC 1912 2.2)", t.Retry, t.Refresh)
	case t.Expire < t.Refresh+t.Retry:
		return FieldErrorf(at("expire"), "%d is shorter than refresh + retry (%d): a secondary would drop the zone before it could refresh it", t.Expire, t.Refresh+t.Retry)
	}
	return nil
}

// NegativeTTL is how long NXDOMAIN and NODATA are cached: min(SOA TTL,
// MINIMUM), RFC 2308 section 3.
func (t Timers) NegativeTTL() uint32 { return min(t.TTL, t.Minimum) }

// RecordType is the type of a static record: one of RecordTypes.
type RecordType string

// The types a static record may have.
const (
	TypeA     RecordType = "A"
	TypeAAAA  RecordType = "AAAA"
	TypeCNAME RecordType = "CNAME"
	TypeTXT   RecordType = "TXT"
	TypeCAA   RecordType = "CAA"
	TypeMX    RecordType = "MX"
)

// RecordTypes are the types a static record may have.
var RecordTypes = []RecordType{TypeA, TypeAAAA, TypeCNAME, TypeTXT, TypeCAA, TypeMX}

// ParseRecordType reads a type as written ("txt" is TXT).
func ParseRecordType(field, s string) (RecordType, error) {
	t := RecordType(strings.ToUpper(s))
	for _, known := range RecordTypes {
		if t == known {
			return t, nil
		}
	}
	names := make([]string, len(RecordTypes))
	for i, k := range RecordTypes {
		names[i] = string(k)
	}
	return "", FieldErrorf(field, "%s: a static record is one of %s", ShortQuote(s), strings.Join(names, ", "))
}

// Record is one static record as configured. Value is canonical, as
// ParseRecordData returns it; TTL 0 is the zone's TTL.
type Record struct {
	Name  string
	Type  RecordType
	Value string
	TTL   uint32
}

// RData is a static record's data, read from its value.
type RData struct {
	Addr netip.Addr // A, AAAA
	// Target is a CNAME's target, or an MX's exchange ("." for a null MX,
	// RFC 7505): a lower-case FQDN.
	Target string
	Pref   uint16 // MX preference
	// Text is a TXT's text as character-strings of at most 255 bytes; the
	// value of a CAA property (Text[0]).
	Text []string
	// Flags and Tag of a CAA record.
	Flags uint8
	Tag   string
}

// MaxTXTLength bounds a TXT record's text: 4000 bytes holds a DKIM key of
// 4096 bits with room to spare, and any answer of a few such records fits
// TCP's 64 KiB.
const MaxTXTLength = 4000

// txtChunk is the longest character-string (RFC 1035 3.3).
const txtChunk = 255

// ParseRecordData reads the value of a record of type t as an operator
// writes it, and returns the data and the value in canonical form, the one
// stored and listed:
//
//	A      192.0.2.1
//	AAAA   2001:db8::1
//	CNAME  shop.cdn.example.net.    (a lower-case FQDN)
//	TXT    any printable ASCII text, as it should read; split into
//	       character-strings of 255 bytes on the wire (RFC 7208 3.3 and
//	       RFC 6376 3.6.2.2 read them joined)
//	CAA    0 issue "letsencrypt.org"   (flags tag value, RFC 8659; the
//	       quotes may be left out)
//	MX     10 mail.example.net.        ("0 ." is a null MX, RFC 7505)
//
// Names are checked for form only; what characters a name may hold is the
// caller's rule. Errors name field.
func ParseRecordData(field string, t RecordType, value string) (RData, string, error) {
	var d RData
	if value == "" {
		return d, "", FieldErrorf(field, "is required")
	}
	switch t {
	case TypeA, TypeAAAA:
		a, err := netip.ParseAddr(value)
		switch {
		case err != nil || a.Zone() != "":
			return d, "", FieldErrorf(field, "%s is not an IP address", ShortQuote(value))
		case t == TypeA && !a.Is4():
			return d, "", FieldErrorf(field, "%s is not an IPv4 address; an IPv6 address is an AAAA record", ShortQuote(value))
		case t == TypeAAAA && (!a.Is6() || a.Is4In6()):
			return d, "", FieldErrorf(field, "%s is not an IPv6 address; an IPv4 address is an A record", ShortQuote(value))
		}
		d.Addr = a
		return d, a.String(), nil
	case TypeCNAME:
		name, err := fqdn(field, value)
		if err != nil {
			return d, "", err
		}
		d.Target = name
		return d, name, nil
	case TypeTXT:
		if len(value) > MaxTXTLength {
			return d, "", FieldErrorf(field, "is %d bytes; a TXT record holds at most %d here", len(value), MaxTXTLength)
		}
		for i := 0; i < len(value); i++ {
			if c := value[i]; c < 0x20 || c > 0x7e {
				return d, "", FieldErrorf(field, "has %q at byte %d: a TXT record here is printable ASCII", c, i)
			}
		}
		for rest := value; rest != ""; {
			n := min(len(rest), txtChunk)
			d.Text = append(d.Text, rest[:n])
			rest = rest[n:]
		}
		return d, value, nil
	case TypeMX:
		prefText, host, ok := strings.Cut(strings.TrimSpace(value), " ")
		pref, err := strconv.ParseUint(prefText, 10, 16)
		if !ok || err != nil {
			return d, "", FieldErrorf(field, "%s: an MX is a preference 0-65535 and a host, e.g. \"10 mail.example.net\"", ShortQuote(value))
		}
		d.Pref = uint16(pref)
		host = strings.TrimSpace(host)
		if host == "." {
			if pref != 0 {
				return d, "", FieldErrorf(field, "a null MX (\".\", RFC 7505) has preference 0")
			}
			d.Target = "."
		} else if d.Target, err = fqdn(field, host); err != nil {
			return d, "", err
		}
		return d, fmt.Sprintf("%d %s", d.Pref, d.Target), nil
	case TypeCAA:
		return parseCAA(field, value)
	}
	return d, "", FieldErrorf("type", "%s: not a static record type", ShortQuote(string(t)))
}

// parseCAA reads "flags tag value" (RFC 8659 4.1), the value optionally in
// double quotes, with the tags a CA reads: issue and issuewild, whose
// value is an issuer domain name and parameters (4.2), and iodef, a URL to
// report to (4.4).
func parseCAA(field, value string) (RData, string, error) {
	var d RData
	fields := strings.Fields(value)
	if len(fields) < 3 {
		return d, "", FieldErrorf(field, "%s: a CAA record is flags, tag and value, e.g. 0 issue \"letsencrypt.org\"", ShortQuote(value))
	}
	flags, err := strconv.ParseUint(fields[0], 10, 8)
	if err != nil || (flags != 0 && flags != 128) {
		return d, "", FieldErrorf(field, "CAA flags %s: want 0, or 128 (critical); the other bits are reserved (RFC 8659 4.1)", ShortQuote(fields[0]))
	}
	d.Flags = uint8(flags)
	d.Tag = strings.ToLower(fields[1])
	// The value is the rest, spaces inside kept (an issue value may have
	// them around ';').
	rest := strings.TrimSpace(value[strings.Index(value, fields[1])+len(fields[1]):])
	if len(rest) >= 2 && rest[0] == '"' && rest[len(rest)-1] == '"' {
		rest = rest[1 : len(rest)-1]
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return d, "", FieldErrorf(field, "the CAA value has %q at byte %d", c, i)
		}
	}
	switch d.Tag {
	case "issue", "issuewild":
		if msg := caaIssueValue(rest); msg != "" {
			return d, "", FieldErrorf(field, "CAA %s value %s: %s", d.Tag, ShortQuote(rest), msg)
		}
	case "iodef":
		u, err := url.Parse(rest)
		if err != nil || (u.Scheme != "mailto" && u.Scheme != "http" && u.Scheme != "https") || (u.Opaque == "" && u.Host == "") {
			return d, "", FieldErrorf(field, "CAA iodef value %s: want a mailto:, http: or https: URL (RFC 8659 4.4)", ShortQuote(rest))
		}
	default:
		return d, "", FieldErrorf(field, "CAA tag %s: want issue, issuewild or iodef", ShortQuote(fields[1]))
	}
	d.Text = []string{rest}
	return d, fmt.Sprintf("%d %s %q", d.Flags, d.Tag, rest), nil
}

// caaIssueValue says what is wrong with an issue or issuewild value, or
// "": [issuer-domain-name] [";" [parameter *(";" parameter)]], a parameter
// being tag=value (RFC 8659 4.2). ";" alone forbids issuance.
func caaIssueValue(v string) string {
	domain, params, _ := strings.Cut(v, ";")
	if domain = strings.TrimSpace(domain); domain != "" {
		for _, label := range strings.Split(domain, ".") {
			if !caaLabel(label) {
				return fmt.Sprintf("issuer %q is not a domain name", domain)
			}
		}
	}
	if strings.TrimSpace(params) == "" {
		return ""
	}
	for _, p := range strings.Split(params, ";") {
		tag, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		tag, val = strings.TrimSpace(tag), strings.TrimSpace(val)
		if !ok || !caaLabel(tag) {
			return fmt.Sprintf("parameter %q is not tag=value", strings.TrimSpace(p))
		}
		for i := 0; i < len(val); i++ {
			if c := val[i]; c <= 0x20 || c == ';' || c > 0x7e {
				return fmt.Sprintf("parameter %s has %q", tag, c)
			}
		}
	}
	return ""
}

// caaLabel reports whether s is letters and digits with inner '-'.
func caaLabel(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// fqdn is name in lower case with its final dot, if it has the form of a
// domain name: labels of 1-63 bytes, 253 in all, no spaces or escapes.
func fqdn(field, name string) (string, error) {
	fq := strings.ToLower(name)
	if !strings.HasSuffix(fq, ".") {
		fq += "."
	}
	if fq == "." || len(fq) > 254 {
		return "", FieldErrorf(field, "%s is not a domain name", ShortQuote(name))
	}
	for _, label := range strings.Split(fq[:len(fq)-1], ".") {
		if label == "" || len(label) > 63 || strings.ContainsAny(label, " \t\\\"()") {
			return "", FieldErrorf(field, "%s is not a domain name", ShortQuote(name))
		}
		for i := 0; i < len(label); i++ {
			if label[i] <= 0x20 || label[i] > 0x7e {
				return "", FieldErrorf(field, "%s is not a domain name", ShortQuote(name))
			}
		}
	}
	return fq, nil
}

// RRset is the static records of one type at one name, as a snapshot
// answers them.
type RRset struct {
	Type RecordType
	TTL  uint32 // the records' TTL, or the zone's
	Data []RData
}

// RRset returns the static records of type t at the name, or nil.
func (n *Name) RRset(t RecordType) *RRset {
	for i := range n.Records {
		if n.Records[i].Type == t {
			return &n.Records[i]
		}
	}
	return nil
}

// MaxCNAMEChain bounds a chain of CNAMEs inside the zone (a CNAME whose
// target is another CNAME of the zone, and so on): 8, as resolvers give up
// on long chains (BIND follows 16 in all, across zones), and a chain is an
// operator's mistake long before that.
const MaxCNAMEChain = 8

// MaxRRset is how many records of one type a name may have. Every answer
// for the name carries them all, built for each query; real zones have a
// handful (a few TXT verification tokens, two or three MX), and more would
// make each answer, and a forged flood's, cost as much again.
const MaxRRset = 64

// addRecords adds the static records to the snapshot's names and checks
// them against each other and against the rest of the zone, the way
// RFC 1034 and RFC 2181 say a zone must look: a CNAME alone at its name
// and never at the apex (RFC 1034 3.6.2, RFC 2181 10.1), one TTL per RRset
// (RFC 2181 5.2), no alias chain that loops. Addresses of a property or of
// a name server are the map's and the zone's, never static records.
func (b *builder) addRecords(records []Record) error {
	s := b.s
	z := s.zone
	for _, r := range records {
		what := fmt.Sprintf("%s %s %s", r.Name, r.Type, r.Value)
		if !s.InZone(r.Name) {
			return FieldErrorf("name", "%s: %s is not in the zone %s", what, r.Name, z.Name)
		}
		data, _, err := ParseRecordData("value", r.Type, r.Value)
		var fe *FieldError
		if errors.As(err, &fe) {
			return FieldErrorf(fe.Field, "%s: %s", what, fe.Msg)
		}
		ttl := r.TTL
		if ttl == 0 {
			ttl = z.TTL
		}
		n := b.addName(r.Name)
		set := n.RRset(r.Type)
		switch {
		case set == nil:
			n.Records = append(n.Records, RRset{Type: r.Type, TTL: ttl})
			set = &n.Records[len(n.Records)-1]
		case set.TTL != ttl:
			return FieldErrorf("ttl", "%s: TTL %d differs from the %d of the other %s records at %s; an RRset has one TTL (RFC 2181 5.2)", what, ttl, set.TTL, r.Type, r.Name)
		case r.Type == TypeCNAME:
			return FieldErrorf("value", "%s: %s has a CNAME already; a name is an alias of one name only", what, r.Name)
		case len(set.Data) == MaxRRset:
			return FieldErrorf("value", "%s: %s has %d %s records already, the most one name may have", what, r.Name, MaxRRset, r.Type)
		}
		set.Data = append(set.Data, data)
	}
	// In name order, so that of several problems the same one is reported
	// whatever order the records came in.
	names := make([]string, 0, len(records))
	for _, r := range records {
		names = append(names, r.Name)
	}
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		n := s.names[name]
		cname := n.RRset(TypeCNAME) != nil
		switch {
		case cname && n.Apex:
			return FieldErrorf("name", "%s CNAME: the apex cannot be an alias, it has the SOA and NS (RFC 1034 3.6.2)", name)
		case cname && (len(n.Records) > 1 || n.Property != nil || n.Host != nil):
			return FieldErrorf("name", "%s CNAME: %s has other data (%s), and a CNAME must be alone at its name (RFC 1034 3.6.2)", name, name, n.describe())
		case n.Property != nil && (n.RRset(TypeA) != nil || n.RRset(TypeAAAA) != nil):
			return FieldErrorf("name", "%s is a property: its addresses are the map's, not static A or AAAA records", name)
		case n.Host != nil && (n.RRset(TypeA) != nil || n.RRset(TypeAAAA) != nil):
			return FieldErrorf("name", "%s is a name server: its addresses are the zone's glue (zone nameservers), not static records", name)
		}
		if cname {
			if err := s.checkChain(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkChain follows the CNAME at name through the zone: the chain must
// end, within MaxCNAMEChain, outside the zone or at a name that exists.
func (s *Snapshot) checkChain(name string) error {
	seen := []string{name}
	for at := name; ; {
		target := s.names[at].RRset(TypeCNAME).Data[0].Target
		if !s.InZone(target) {
			return nil
		}
		next := s.names[target]
		switch {
		case next == nil:
			return FieldErrorf("value", "%s CNAME %s: %s does not exist in the zone; add it first", at, target, target)
		case next.RRset(TypeCNAME) == nil:
			return nil
		}
		for _, v := range seen {
			if v == target {
				return FieldErrorf("value", "%s CNAME %s: the aliases loop: %s -> %s", name, s.names[name].RRset(TypeCNAME).Data[0].Target, strings.Join(seen, " -> "), target)
			}
		}
		if seen = append(seen, target); len(seen) > MaxCNAMEChain {
			return FieldErrorf("value", "%s: a chain of more than %d CNAMEs in the zone: %s", name, MaxCNAMEChain, strings.Join(seen, " -> "))
		}
		at = target
	}
}

// describe says what is at a name, for an error message.
func (n *Name) describe() string {
	var what []string
	switch {
	case n.Property != nil:
		what = append(what, "a property")
	case n.Host != nil:
		what = append(what, "a name server's addresses")
	}
	for _, set := range n.Records {
		if set.Type != TypeCNAME {
			what = append(what, string(set.Type))
		}
	}
	return strings.Join(what, ", ")
}
