package config

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// ruleCase is an input and what a rule makes of it; want "" means the rule
// refuses it.
type ruleCase struct{ in, want string }

func checkRule(t *testing.T, name string, rule func(field, s string) (string, error), cases []ruleCase) {
	t.Helper()
	for _, tc := range cases {
		got, err := rule("field", tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("%s(%q) = %q, %v; want %q", name, tc.in, got, err, tc.want)
		}
	}
}

func TestHostName(t *testing.T) {
	checkRule(t, "HostName", HostName, []ruleCase{
		{"Shop.CDN.example.net", "shop.cdn.example.net."},
		{"xn--bcher-kva.cdn.example.net.", "xn--bcher-kva.cdn.example.net."},
		{"a-1.b2.c", "a-1.b2.c."},
		{strings.Repeat("a.", 126) + "b", strings.Repeat("a.", 126) + "b."}, // 253 characters
		{"", ""},
		{".", ""},
		{"a..b", ""},
		{"_acme.cdn.example.net", ""},
		{"*.cdn.example.net", ""},
		{"a-.example.net", ""},
		{"a/b.example.net", ""},
		{strings.Repeat("a.", 127) + "b", ""}, // 255 characters
		{"xn--.example.net", ""},
		{"caf\u00e9.example.net", ""},
	})
}

func TestMailbox(t *testing.T) {
	checkRule(t, "Mailbox", Mailbox, []ruleCase{
		{"hostmaster@example.net", "hostmaster.example.net."},
		{"Host.Master@Example.net", `host\.master.example.net.`},
		{"hostmaster.example.net.", "hostmaster.example.net."},
		{`host\.master.example.net`, `host\.master.example.net.`},
		{"dns+ops@example.net", "dns+ops.example.net."},
		{"host master@example.net", ""},
		{"host\nmaster@example.net", ""},
		{"hostmaster@", ""},
		{"@example.net", ""},
		{"hostmaster", ""},
		{"h\u00f6st@example.net", ""},
	})
}

func TestDuplicateKey(t *testing.T) {
	for doc, want := range map[string]string{
		`{"a":1,"b":2}`:                       "",
		`{"a":1,"a":2}`:                       "a",
		`{"a":1,"A":2}`:                       "A",
		`{"a":{"b":1},"c":{"b":2}}`:           "",
		`{"e":[{"x":1},{"x":1,"y":2,"x":3}]}`: "e[1].x",
		`[{"k":[[{"z":1,"z":1}]]}]`:           "[0].k[0][0].z",
		`{"s":"{\"a\":1,\"a\":2}","n":[1,2]}`: "",
	} {
		if got := DuplicateKey([]byte(doc)); got != want {
			t.Errorf("DuplicateKey(%s) = %q, want %q", doc, got, want)
		}
	}
}

// FuzzHostName: what hostName accepts is a lower-case ASCII FQDN that
// miekg/dns reads as a domain name, and accepting it again changes nothing.
func FuzzHostName(f *testing.F) {
	for _, s := range []string{"shop.cdn.example.net.", "a b.c", "bücher.de", "xn--bcher-kva.de", "\xff.de", "-a.b", "a..b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := HostName("name", in)
		if err != nil {
			return
		}
		if _, ok := dns.IsDomainName(out); !ok || out != strings.ToLower(out) || !strings.HasSuffix(out, ".") {
			t.Fatalf("HostName(%q) = %q", in, out)
		}
		for _, c := range []byte(out) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				t.Fatalf("HostName(%q) = %q holds %q", in, out, c)
			}
		}
		if again, err := HostName("name", out); again != out || err != nil {
			t.Fatalf("HostName(%q) = %q, but hostName of that = %q, %v", in, out, again, err)
		}
	})
}

// FuzzMailbox: an accepted contact is a domain name without a space or a
// control character, and accepting it again changes nothing.
func FuzzMailbox(f *testing.F) {
	for _, s := range []string{"hostmaster@example.net", `a\.b.example.net`, "a b@c.d", "x\n@y.z", `\`, `a\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Mailbox("contact", in)
		if err != nil {
			return
		}
		if _, ok := dns.IsDomainName(out); !ok || strings.ContainsFunc(out, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			t.Fatalf("Mailbox(%q) = %q", in, out)
		}
		if again, err := Mailbox("contact", out); again != out || err != nil {
			t.Fatalf("Mailbox(%q) = %q, but mailbox of that = %q, %v", in, out, again, err)
		}
	})
}

// FuzzDuplicateKey: on any document that decodes, duplicateKey does not
// fail, and a path it names ends in a key that the document holds twice
// (checked where keys hold no '.', '[' or escapes).
func FuzzDuplicateKey(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `[{"b":{"c":[1,{"d":1,"D":2}]}}]`, `"x"`, `{}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		var v any
		if json.Unmarshal([]byte(doc), &v) != nil {
			return
		}
		path := DuplicateKey([]byte(doc))
		if path == "" {
			return
		}
		key := path[strings.LastIndexAny(path, ".]")+1:]
		plain := !strings.ContainsAny(doc, `\.[]`) // keys the path shows as they are
		if plain && strings.Count(strings.ToLower(doc), strings.ToLower(`"`+key+`"`)) < 2 {
			t.Fatalf("DuplicateKey(%s) = %q, but the key is not there twice", doc, path)
		}
	})
}
