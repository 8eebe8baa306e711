package config

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/store"
)

func TestRecordName(t *testing.T) {
	checkRule(t, "RecordName", RecordName, []ruleCase{
		{"_acme-challenge.Shop.cdn.example.net", "_acme-challenge.shop.cdn.example.net."},
		{"s1._domainkey.cdn.example.net.", "s1._domainkey.cdn.example.net."},
		{"_dmarc.cdn.example.net", "_dmarc.cdn.example.net."},
		{"www.cdn.example.net", "www.cdn.example.net."},
		{"*.cdn.example.net", ""},
		{"*", ""},
		{"a b.cdn.example.net", ""},
		{"a!.cdn.example.net", ""},
		{"-a.cdn.example.net", ""},
		{"", ""},
		{"caf\u00e9.example.net", ""},
	})
	if _, err := RecordName("name", "*.cdn.example.net"); err == nil || !strings.Contains(err.Error(), "wildcards are not served") {
		t.Errorf("wildcard: %v", err)
	}
}

func TestRecordSpec(t *testing.T) {
	tests := []struct {
		spec  RecordSpec
		want  store.Record // zero: refused
		field string
	}{
		{RecordSpec{Name: "_acme-challenge.shop.cdn.example.net", Type: "txt", Value: "gfj9Xq"},
			store.Record{Name: "_acme-challenge.shop.cdn.example.net.", Type: "TXT", Value: "gfj9Xq", TTL: 3600}, ""},
		{RecordSpec{Name: "cdn.example.net", Type: "CAA", Value: "0 issue letsencrypt.org", TTL: ptr(uint32(86400))},
			store.Record{Name: "cdn.example.net.", Type: "CAA", Value: `0 issue "letsencrypt.org"`, TTL: 86400}, ""},
		{RecordSpec{Name: "cdn.example.net", Type: "MX", Value: "10 Mail.Example.NET"},
			store.Record{Name: "cdn.example.net.", Type: "MX", Value: "10 mail.example.net.", TTL: 3600}, ""},
		{RecordSpec{Name: "_acme-challenge.shop.cdn.example.net", Type: "CNAME", Value: "_acme-challenge.shop.acme-dns.example"},
			store.Record{Name: "_acme-challenge.shop.cdn.example.net.", Type: "CNAME", Value: "_acme-challenge.shop.acme-dns.example.", TTL: 3600}, ""},
		{RecordSpec{Name: "origin.cdn.example.net", Type: "A", Value: "127.0.0.1"}, store.Record{}, "value"},
		{RecordSpec{Name: "x.cdn.example.net", Type: "MX", Value: "10 mail_1.example.net"}, store.Record{}, "value"},
		{RecordSpec{Name: "x.cdn.example.net", Type: "CNAME", Value: "a b.example"}, store.Record{}, "value"},
		{RecordSpec{Name: "x.cdn.example.net", Type: "NS", Value: "ns.example."}, store.Record{}, "type"},
		{RecordSpec{Name: "x.cdn.example.net", Type: "TXT", Value: "x", TTL: ptr(uint32(0))}, store.Record{}, "ttl"},
		{RecordSpec{Name: "x.cdn.example.net", Type: "TXT", Value: "x", TTL: ptr(uint32(86401))}, store.Record{}, "ttl"},
		{RecordSpec{Name: "*.cdn.example.net", Type: "TXT", Value: "x"}, store.Record{}, "name"},
		{RecordSpec{Name: "x.cdn.example.net", Type: "TXT"}, store.Record{}, "value"},
	}
	for _, tt := range tests {
		got, err := tt.spec.Record(3600)
		if tt.field != "" {
			if fieldOf(err) != tt.field {
				t.Errorf("%+v: %v; want an error on %s", tt.spec, err, tt.field)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%+v: %+v, %v; want %+v", tt.spec, got, err, tt.want)
		}
	}
}

func TestZoneSpecTimers(t *testing.T) {
	base := ZoneSpec{Name: "cdn.example.net", Contact: "hostmaster@example.net", NameServers: []NSSpec{{Name: "ns1.example.org"}}}
	z, err := base.Zone(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ZoneOf(z); got.TTL != 3600 || got.NSTTL != 3600 || got.Refresh != 14400 || got.Retry != 3600 || got.Expire != 1209600 || got.Minimum != 300 {
		t.Errorf("defaults = %+v", got)
	}
	// A timer given as its default is stored as the default: writing it
	// out changes nothing.
	same := base
	same.Refresh, same.Minimum = 14400, 300
	if z2, err := same.Zone(nil); err != nil || z2.Refresh != 0 || z2.Minimum != 0 {
		t.Errorf("defaults written out: %+v, %v; want them stored as 0", z2, err)
	}
	set := base
	set.NSTTL, set.Minimum, set.Refresh, set.Retry, set.Expire = 86400, 900, 43200, 7200, 2419200
	z3, err := set.Zone(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ZoneOf(z3); got.NSTTL != 86400 || got.Minimum != 900 || got.Refresh != 43200 || got.TTL != 3600 {
		t.Errorf("set = %+v", got)
	}
	bad := base
	bad.Retry = 20000 // not below the default refresh
	if _, err := bad.Zone(nil); fieldOf(err) != "retry" {
		t.Errorf("retry above refresh: %v", err)
	}
	w := WorldSpec{Zone: &bad}
	var c store.Config
	if err := w.ApplyTo(&c, false); fieldOf(err) != "zone.retry" {
		t.Errorf("in a world file: %v, want an error on zone.retry", err)
	}
}

func TestRecordEdits(t *testing.T) {
	c := demoConfig(t)
	acme := RecordSpec{Name: "_acme-challenge.shop.cdn.example.net", Type: "TXT", Value: "token-1", TTL: ptr(uint32(60))}
	if _, err := AddRecord(&c, acme); err != nil {
		t.Fatal(err)
	}
	if _, err := AddRecord(&c, acme); !errors.Is(err, ErrConflict) || fieldOf(err) != "value" {
		t.Errorf("the same record twice: %v, want a conflict on value", err)
	}
	acme.Value = "token-2"
	if _, err := AddRecord(&c, acme); err != nil {
		t.Fatal(err)
	}
	if err := Check(c); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// A second TXT at the name with another TTL: Check refuses the RRset.
	odd := c.Clone()
	if _, err := AddRecord(&odd, RecordSpec{Name: acme.Name, Type: "TXT", Value: "token-3"}); err != nil {
		t.Fatal(err)
	}
	if err := Check(odd); fieldOf(err) != "ttl" {
		t.Errorf("Check of an RRset with two TTLs: %v", err)
	}
	// Removing by value, as written or canonical, then all of a type.
	if _, err := AddRecord(&c, RecordSpec{Name: "cdn.example.net", Type: "CAA", Value: `0 issuewild "letsencrypt.org"`}); err != nil {
		t.Fatal(err)
	}
	if removed, err := DeleteRecords(&c, "cdn.example.net", "caa", "0 issuewild letsencrypt.org"); err != nil || len(removed) != 1 {
		t.Errorf("remove CAA by value as written: %v %v", removed, err)
	}
	if removed, err := DeleteRecords(&c, acme.Name, "TXT", ""); err != nil || len(removed) != 2 {
		t.Errorf("remove every TXT: %v %v", removed, err)
	}
	if _, err := DeleteRecords(&c, acme.Name, "TXT", ""); !errors.Is(err, store.ErrNotFound) || fieldOf(err) != "name" {
		t.Errorf("remove again: %v, want not found", err)
	}
	if len(c.Records) != len(demoConfig(t).Records) {
		t.Errorf("records left: %v", c.Records)
	}
}

// A world file's records are applied like its other records: by key,
// idempotent, and with --prune the file's records are all there is.
func TestApplyRecords(t *testing.T) {
	c := demoConfig(t)
	w, err := ReadWorld("../../../../testdata/world.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w.Zone.TTL = 600
	w.Records = []RecordSpec{
		{Name: "cdn.example.net.", Type: "TXT", Value: "v=spf1 -all"},
		{Name: "www.cdn.example.net.", Type: "CNAME", Value: "shop.cdn.example.net.", TTL: ptr(uint32(300))},
	}
	before := c.Clone()
	if err := w.ApplyTo(&c, false); err != nil {
		t.Fatal(err)
	}
	if err := Check(c); err != nil {
		t.Fatal(err)
	}
	added, changed, _ := DiffConfigs(before, c).Lists()
	if !slicesEqual(added, []string{"record www.cdn.example.net. CNAME shop.cdn.example.net."}) || !slicesEqual(changed, []string{"zone cdn.example.net.", "record cdn.example.net. TXT v=spf1 -all"}) {
		t.Errorf("added %q changed %q", added, changed)
	}
	// The TXT sets no TTL: it gets the zone's, as the file declares it.
	if i := slices.IndexFunc(c.Records, func(r store.Record) bool { return r.Type == "TXT" }); c.Records[i].TTL != 600 {
		t.Errorf("TXT TTL %d, want the zone's 600", c.Records[i].TTL)
	}
	again := c.Clone()
	if err := w.ApplyTo(&c, false); err != nil || !DiffConfigs(again, c).Empty() {
		t.Errorf("applied twice: %v %v", err, changes(DiffConfigs(again, c)))
	}
	w.Records = w.Records[:1]
	if err := w.ApplyTo(&c, true); err != nil {
		t.Fatal(err)
	}
	if _, _, removed := DiffConfigs(again, c).Lists(); !slicesEqual(removed, []string{
		`record cdn.example.net. CAA 0 issue "letsencrypt.org"`, "record cdn.example.net. MX 0 .", "record www.cdn.example.net. CNAME shop.cdn.example.net."}) {
		t.Errorf("prune removed %q", removed)
	}
	bad := WorldSpec{Records: []RecordSpec{{Name: "x.cdn.example.net", Type: "MX", Value: "ten mail"}}}
	if err := bad.ApplyTo(&c, false); fieldOf(err) != "records[0].value" {
		t.Errorf("a bad record: %v, want an error on records[0].value", err)
	}
	dup := WorldSpec{Records: []RecordSpec{{Name: "x.cdn.example.net", Type: "txt", Value: "a"}, {Name: "X.cdn.example.net.", Type: "TXT", Value: "a"}}}
	if err := dup.ApplyTo(&c, false); fieldOf(err) != "records[1].value" {
		t.Errorf("a record twice: %v, want an error on records[1].value", err)
	}
}

func slicesEqual(a, b []string) bool { return slices.Equal(a, b) }

// FuzzRecordSpec: a record the spec accepts has a name and a value that
// miekg/dns reads back as the same record, and its key is stable.
func FuzzRecordSpec(f *testing.F) {
	for _, s := range [][3]string{
		{"_acme-challenge.shop.cdn.example.net", "TXT", "gfj9Xq"}, {"cdn.example.net", "CAA", `0 issue "letsencrypt.org"`},
		{"cdn.example.net", "MX", "0 ."}, {"www.cdn.example.net", "CNAME", "_x.example."}, {"a.cdn.example.net", "AAAA", "2001:db8::1"},
		{"*.x", "TXT", "a"}, {"a b", "A", "1.2.3.4"}, {"x.y", "TXT", `\"quoted\" \\`},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, name, typ, value string) {
		r, err := RecordSpec{Name: name, Type: typ, Value: value}.Record(3600)
		if err != nil {
			if fieldOf(err) == "" {
				t.Fatalf("error %v names no field", err)
			}
			return
		}
		if _, ok := dns.IsDomainName(r.Name); !ok || strings.ContainsAny(r.Name, " *\\") {
			t.Fatalf("name %q accepted", r.Name)
		}
		again, err := RecordSpec{Name: r.Name, Type: r.Type, Value: r.Value}.Record(3600)
		if err != nil || again != r {
			t.Fatalf("%+v reads back as %+v, %v", r, again, err)
		}
		// miekg/dns reads the record as written in a zone file (TXT in
		// quotes, with its escapes).
		rdata := r.Value
		if r.Type == "TXT" {
			rdata = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(r.Value) + `"`
		}
		if _, err := dns.NewRR(r.Name + " 60 IN " + r.Type + " " + rdata); err != nil {
			t.Fatalf("miekg/dns does not read %s %s %s: %v", r.Name, r.Type, rdata, err)
		}
	})
}
