package mapping

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseRecordData(t *testing.T) {
	tests := []struct {
		typ       RecordType
		value     string
		canonical string // "" for an error
	}{
		{TypeA, "192.0.2.1", "192.0.2.1"},
		{TypeA, "2001:db8::1", ""},
		{TypeA, "192.0.2", ""},
		{TypeAAAA, "2001:DB8::1", "2001:db8::1"},
		{TypeAAAA, "192.0.2.1", ""},
		{TypeAAAA, "::ffff:192.0.2.1", ""},
		{TypeAAAA, "fe80::1%eth0", ""},
		{TypeCNAME, "Shop.CDN.example.net", "shop.cdn.example.net."},
		{TypeCNAME, "_acme-challenge.shop.validation.example.", "_acme-challenge.shop.validation.example."},
		{TypeCNAME, "a..b", ""},
		{TypeCNAME, ".", ""},
		{TypeCNAME, "a b.example.", ""},
		{TypeCNAME, strings.Repeat("a", 64) + ".example.", ""},
		{TypeTXT, "v=spf1 -all", "v=spf1 -all"},
		{TypeTXT, `quote " and back\slash`, `quote " and back\slash`},
		{TypeTXT, "tab\there", ""},
		{TypeTXT, "caf\xc3\xa9", ""},
		{TypeTXT, strings.Repeat("x", MaxTXTLength+1), ""},
		{TypeMX, "10 Mail.Example.net", "10 mail.example.net."},
		{TypeMX, "0 .", "0 ."},
		{TypeMX, "10 .", ""},
		{TypeMX, "mail.example.net", ""},
		{TypeMX, "65536 mail.example.net", ""},
		{TypeMX, "-1 mail.example.net", ""},
		{TypeCAA, `0 issue "letsencrypt.org"`, `0 issue "letsencrypt.org"`},
		{TypeCAA, `0 ISSUE letsencrypt.org`, `0 issue "letsencrypt.org"`},
		{TypeCAA, `128 issuewild ";"`, `128 issuewild ";"`},
		{TypeCAA, `0 issue "letsencrypt.org; validationmethods=dns-01"`, `0 issue "letsencrypt.org; validationmethods=dns-01"`},
		{TypeCAA, `0 issue "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/1"`, `0 issue "letsencrypt.org; accounturi=https://acme-v02.api.letsencrypt.org/acme/acct/1"`},
		{TypeCAA, `0 iodef "mailto:security@example.net"`, `0 iodef "mailto:security@example.net"`},
		{TypeCAA, `0 iodef "https://iodef.example.net/report"`, `0 iodef "https://iodef.example.net/report"`},
		{TypeCAA, `0 iodef "ftp://example.net/"`, ""},
		{TypeCAA, `0 iodef "security@example.net"`, ""},
		{TypeCAA, `1 issue "letsencrypt.org"`, ""},
		{TypeCAA, `256 issue "letsencrypt.org"`, ""},
		{TypeCAA, `0 issuemail "letsencrypt.org"`, ""},
		{TypeCAA, `0 issue "lets_encrypt.org"`, ""},
		{TypeCAA, `0 issue "letsencrypt.org; nokey"`, ""},
		{TypeCAA, `0 issue "a\"b"`, ""},
		{TypeCAA, `0 issue`, ""},
		{TypeCAA, "", ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.typ)+" "+tt.value, func(t *testing.T) {
			_, got, err := ParseRecordData("value", tt.typ, tt.value)
			if tt.canonical == "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != "value" {
					t.Fatalf("ParseRecordData = %q, %v; want a FieldError naming value", got, err)
				}
				return
			}
			if err != nil || got != tt.canonical {
				t.Fatalf("ParseRecordData = %q, %v; want %q", got, err, tt.canonical)
			}
			// The canonical form reads back as itself: it is what is stored
			// and read again by every build.
			if _, again, err := ParseRecordData("value", tt.typ, got); err != nil || again != got {
				t.Errorf("canonical %q reads back as %q, %v", got, again, err)
			}
		})
	}
}

// A TXT text longer than a character-string is cut into 255-byte strings,
// which resolvers and mail servers read joined (RFC 7208 3.3, RFC 6376).
func TestTXTSplitAt255(t *testing.T) {
	text := strings.Repeat("a", 255) + strings.Repeat("b", 255) + "tail"
	d, _, err := ParseRecordData("value", TypeTXT, text)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Text) != 3 || len(d.Text[0]) != 255 || len(d.Text[1]) != 255 || d.Text[2] != "tail" || strings.Join(d.Text, "") != text {
		t.Errorf("Text = %d strings of %v bytes", len(d.Text), lens(d.Text))
	}
	d, _, _ = ParseRecordData("value", TypeTXT, strings.Repeat("c", 255))
	if len(d.Text) != 1 {
		t.Errorf("255 bytes make %d strings, want 1", len(d.Text))
	}
}

func lens(ss []string) []int {
	out := make([]int, len(ss))
	for i, s := range ss {
		out[i] = len(s)
	}
	return out
}

func TestParseRecordType(t *testing.T) {
	if typ, err := ParseRecordType("type", "txt"); err != nil || typ != TypeTXT {
		t.Errorf("txt = %q, %v", typ, err)
	}
	for _, bad := range []string{"NS", "SOA", "SRV", "", "A "} {
		if _, err := ParseRecordType("type", bad); err == nil || !strings.Contains(err.Error(), "A, AAAA, CNAME, TXT, CAA, MX") {
			t.Errorf("%q: err = %v, want the types listed", bad, err)
		}
	}
}

// demoRecords are static records a CDN publishes: CAA and MX at the apex,
// an ACME challenge below a property, an alias of a property, an address
// of a name that is not one, and an alias out of the zone.
func demoRecords() []Record {
	return []Record{
		{Name: "cdn.example.net.", Type: TypeCAA, Value: `0 issue "letsencrypt.org"`},
		{Name: "cdn.example.net.", Type: TypeMX, Value: "0 ."},
		{Name: "cdn.example.net.", Type: TypeTXT, Value: "v=spf1 -all", TTL: 600},
		{Name: "_acme-challenge.shop.cdn.example.net.", Type: TypeTXT, Value: "token-1", TTL: 60},
		{Name: "_acme-challenge.shop.cdn.example.net.", Type: TypeTXT, Value: "token-2", TTL: 60},
		{Name: "www.cdn.example.net.", Type: TypeCNAME, Value: "shop.cdn.example.net."},
		{Name: "origin.a.b.cdn.example.net.", Type: TypeA, Value: "198.51.100.10"},
		{Name: "status.cdn.example.net.", Type: TypeCNAME, Value: "status.example.org."},
		{Name: "shop.cdn.example.net.", Type: TypeCAA, Value: `0 issue "pki.example"`},
	}
}

func TestBuildRecords(t *testing.T) {
	in := testInputs(nil)
	in.Records = demoRecords()
	s, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Zone().Timers; got != DefaultTimers {
		t.Errorf("timers = %+v, want the defaults %+v", got, DefaultTimers)
	}
	apex := s.Lookup("cdn.example.net.")
	if !apex.Apex || apex.RRset(TypeCAA) == nil || apex.RRset(TypeMX).Data[0].Target != "." {
		t.Errorf("apex = %+v", apex)
	}
	if txt := apex.RRset(TypeTXT); txt.TTL != 600 {
		t.Errorf("apex TXT TTL %d, want its own 600", txt.TTL)
	}
	if caa := apex.RRset(TypeCAA); caa.TTL != DefaultTimers.TTL {
		t.Errorf("apex CAA TTL %d, want the zone's %d", caa.TTL, DefaultTimers.TTL)
	}
	acme := s.Lookup("_acme-challenge.shop.cdn.example.net.").RRset(TypeTXT)
	if acme == nil || len(acme.Data) != 2 || acme.Data[0].Text[0] != "token-1" || acme.TTL != 60 {
		t.Errorf("ACME TXT = %+v", acme)
	}
	// A property keeps its map and gains the CAA beside it.
	shop := s.Lookup("shop.cdn.example.net.")
	if shop.Property == nil || shop.RRset(TypeCAA) == nil || shop.RRset(TypeA) != nil {
		t.Errorf("shop = %+v", shop)
	}
	if www := s.Lookup("www.cdn.example.net.").RRset(TypeCNAME); www == nil || www.Data[0].Target != "shop.cdn.example.net." {
		t.Errorf("www CNAME = %+v", www)
	}
	// Names between a record and the apex are empty non-terminals.
	for _, ent := range []string{"a.b.cdn.example.net.", "b.cdn.example.net."} {
		if n := s.Lookup(ent); n == nil || n.Apex || n.Property != nil || n.Host != nil || len(n.Records) != 0 {
			t.Errorf("%s = %+v, want an empty non-terminal", ent, n)
		}
	}
	if s.Lookup("nope.cdn.example.net.") != nil {
		t.Error("a name with nothing exists")
	}
}

func TestBuildRecordErrors(t *testing.T) {
	rec := func(name string, typ RecordType, value string) Record {
		return Record{Name: name, Type: typ, Value: value}
	}
	tests := []struct {
		name    string
		records []Record
		timers  Timers
		field   string
		msg     string
	}{
		{name: "outside the zone", records: []Record{rec("www.example.org.", TypeA, "192.0.2.1")}, field: "name", msg: "not in the zone"},
		{name: "CNAME at the apex", records: []Record{rec("cdn.example.net.", TypeCNAME, "example.org.")}, field: "name", msg: "apex cannot be an alias"},
		{name: "CNAME beside TXT", records: []Record{rec("www.cdn.example.net.", TypeCNAME, "example.org."), rec("www.cdn.example.net.", TypeTXT, "x")},
			field: "name", msg: "must be alone at its name (RFC 1034 3.6.2)"},
		{name: "CNAME at a property", records: []Record{rec("shop.cdn.example.net.", TypeCNAME, "example.org.")}, field: "name", msg: "a property"},
		{name: "CNAME at a name server", records: []Record{rec("ns1.cdn.example.net.", TypeCNAME, "example.org.")}, field: "name", msg: "a name server"},
		{name: "two CNAMEs", records: []Record{rec("www.cdn.example.net.", TypeCNAME, "a.example.org."), rec("www.cdn.example.net.", TypeCNAME, "b.example.org.")},
			field: "value", msg: "has a CNAME already"},
		{name: "A at a property", records: []Record{rec("shop.cdn.example.net.", TypeA, "192.0.2.99")}, field: "name", msg: "addresses are the map's"},
		{name: "AAAA at a name server", records: []Record{rec("ns2.cdn.example.net.", TypeAAAA, "2001:db8::99")}, field: "name", msg: "glue"},
		{name: "TTLs differ in an RRset", records: []Record{{Name: "x.cdn.example.net.", Type: TypeTXT, Value: "a", TTL: 60}, {Name: "x.cdn.example.net.", Type: TypeTXT, Value: "b"}},
			field: "ttl", msg: "an RRset has one TTL"},
		{name: "dangling alias in the zone", records: []Record{rec("www.cdn.example.net.", TypeCNAME, "nope.cdn.example.net.")}, field: "value", msg: "does not exist in the zone"},
		{name: "alias loop", records: []Record{rec("a.cdn.example.net.", TypeCNAME, "b.cdn.example.net."), rec("b.cdn.example.net.", TypeCNAME, "a.cdn.example.net.")},
			field: "value", msg: "the aliases loop: a.cdn.example.net. -> b.cdn.example.net. -> a.cdn.example.net."},
		{name: "alias to itself", records: []Record{rec("a.cdn.example.net.", TypeCNAME, "a.cdn.example.net.")}, field: "value", msg: "loop"},
		{name: "chain too long", records: chain(MaxCNAMEChain + 1), field: "value", msg: "a chain of more than 8 CNAMEs"},
		{name: "too many records of a type", records: txts(MaxRRset + 1), field: "value", msg: "has 64 TXT records already"},
		{name: "bad value", records: []Record{rec("x.cdn.example.net.", TypeMX, "mail")}, field: "value", msg: "x.cdn.example.net. MX mail:"},
		{name: "retry not below refresh", timers: Timers{Refresh: 3600, Retry: 3600}, field: "zone.retry", msg: "not shorter than refresh"},
		{name: "expire below refresh+retry", timers: Timers{Refresh: 86400, Expire: 86400}, field: "zone.expire", msg: "shorter than refresh + retry"},
		{name: "minimum above a day", timers: Timers{Minimum: 86401}, field: "zone.minimum", msg: "above 86400"},
		{name: "NS TTL above a day", timers: Timers{NSTTL: 172800}, field: "zone.ns_ttl", msg: "above 86400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testInputs(nil)
			in.Records = tt.records
			in.Zone.Timers = tt.timers
			_, err := Build(in)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(fe.Msg, tt.msg) {
				t.Fatalf("Build: %v; want field %s and %q", err, tt.field, tt.msg)
			}
		})
	}
	in := Inputs{Records: []Record{{Name: "x.cdn.example.net.", Type: TypeTXT, Value: "x"}}}
	if _, err := Build(in); err == nil || !strings.Contains(err.Error(), "need a zone") {
		t.Errorf("records without a zone: %v", err)
	}
}

// chain is n CNAMEs c0 -> c1 -> ... -> cn, the last a property.
func chain(n int) []Record {
	var out []Record
	for i := range n {
		target := "shop.cdn.example.net."
		if i < n-1 {
			target = "c" + string(rune('a'+i+1)) + ".cdn.example.net."
		}
		out = append(out, Record{Name: "c" + string(rune('a'+i)) + ".cdn.example.net.", Type: TypeCNAME, Value: target})
	}
	return out
}

func TestBuildRecordAccepts(t *testing.T) {
	in := testInputs(nil)
	in.Records = append(chain(MaxCNAMEChain), // the longest chain allowed
		Record{Name: "alias.eu.cdn.example.net.", Type: TypeCNAME, Value: "eu.cdn.example.net."}) // to an empty non-terminal
	in.Records = append(in.Records, txts(MaxRRset)...) // the most records one name may have
	in.Zone.Timers = Timers{TTL: 300, NSTTL: 86400, Refresh: 7200, Retry: 900, Expire: 8100, Minimum: 0}
	s, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	// Minimum 0 is the default; the rest stay as set.
	if got := s.Zone().Timers; got.Minimum != DefaultTimers.Minimum || got.TTL != 300 || got.NSTTL != 86400 || got.NegativeTTL() != 300 {
		t.Errorf("timers = %+v", got)
	}
}

// Build is deterministic for records too: the same records in any order
// make the same RRsets, in the same order.
func TestBuildRecordsOrder(t *testing.T) {
	in := testInputs(nil)
	in.Records = demoRecords()
	a, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(in.Records)
	b, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cdn.example.net.", "_acme-challenge.shop.cdn.example.net."} {
		x, y := a.Lookup(name), b.Lookup(name)
		if len(x.Records) != len(y.Records) {
			t.Fatalf("%s: %d RRsets against %d", name, len(x.Records), len(y.Records))
		}
	}
}

func FuzzParseRecordData(f *testing.F) {
	for _, seed := range []struct{ typ, value string }{
		{"A", "192.0.2.1"}, {"AAAA", "2001:db8::1"}, {"CNAME", "x.example."}, {"TXT", "v=spf1 -all"},
		{"MX", "10 mail.example.net"}, {"MX", "0 ."}, {"CAA", `0 issue "letsencrypt.org; validationmethods=dns-01"`},
		{"CAA", `0 iodef "mailto:a@b"`}, {"CAA", `128 issuewild ";"`}, {"TXT", strings.Repeat("z", 300)},
	} {
		f.Add(seed.typ, seed.value)
	}
	f.Fuzz(func(t *testing.T, typ, value string) {
		rt, err := ParseRecordType("type", typ)
		if err != nil {
			return
		}
		d, canonical, err := ParseRecordData("value", rt, value)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "value" {
				t.Fatalf("error %v does not name the value", err)
			}
			return
		}
		again, canonical2, err := ParseRecordData("value", rt, canonical)
		if err != nil || canonical2 != canonical {
			t.Fatalf("canonical %q of %q reads back as %q, %v", canonical, value, canonical2, err)
		}
		for _, s := range append(d.Text, again.Text...) {
			if len(s) > 255 {
				t.Fatalf("a character-string of %d bytes", len(s))
			}
		}
	})
}

// txts is n TXT records at one name.
func txts(n int) []Record {
	var out []Record
	for i := range n {
		out = append(out, Record{Name: "many.cdn.example.net.", Type: TypeTXT, Value: fmt.Sprint("token ", i)})
	}
	return out
}
