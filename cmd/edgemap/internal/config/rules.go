package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"

	"github.com/edgemap/edgemap/mapping"
)

// The rules every name and address a person writes must follow, in one
// place: the specs apply them, so the admin API applies them to its request
// bodies (and through it the CLI and `apply`) and `serve --world` to the
// world file. The store and the map trust what passed them. The rules for
// IDs, answers and the all-down policy are mapping's (mapping.CheckID,
// CheckAnswers, ParseAllDownPolicy), because the probe collector and Build
// apply them too.

// HostName returns name as a lower-case FQDN if it is a host name: labels of
// letters, digits and '-' (not at either end), 1-63 bytes each, at most 253
// bytes in all (RFC 1123). Properties, name servers and the zone are all
// looked up as host names, and a name outside these rules could never be
// asked for (a space, a '!', an underscore) or is not what it looks like
// (non-ASCII: an IDN must be written in the punycode form resolvers ask for).
func HostName(field, name string) (string, error) { return domainName(field, name, false) }

// RecordName returns the owner name of a static record, or a CNAME's
// target, as a lower-case FQDN: a host name whose labels may also hold
// '_', as the names of services and verifications do (_acme-challenge,
// _dmarc, s1._domainkey; RFC 8552). A wildcard ('*') is refused: the zone
// answers only the names it holds.
func RecordName(field, name string) (string, error) {
	if name == "*" || strings.HasPrefix(name, "*.") {
		return "", mapping.FieldErrorf(field, "%q: wildcards are not served; name each record", name)
	}
	return domainName(field, name, true)
}

// domainName is HostName, with '_' allowed in labels when underscore.
func domainName(field, name string, underscore bool) (string, error) {
	what := "a host name"
	if underscore {
		what = "a domain name"
	}
	if name == "" {
		return "", mapping.FieldErrorf(field, "is required")
	}
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			if ace, err := idna.Lookup.ToASCII(strings.TrimSuffix(name, ".")); err == nil {
				return "", mapping.FieldErrorf(field, "%q is not ASCII: write an internationalized name in its punycode form, %s.", name, ace)
			}
			return "", mapping.FieldErrorf(field, "%q is not ASCII, nor an internationalized name that has a punycode form", name)
		}
	}
	fq := strings.ToLower(name)
	if !strings.HasSuffix(fq, ".") {
		fq += "."
	}
	if len(fq) > 254 {
		return "", mapping.FieldErrorf(field, "%q is longer than 253 characters", name)
	}
	if fq == "." {
		return "", mapping.FieldErrorf(field, "%q is the root, not %s", name, what)
	}
	for _, label := range strings.Split(fq[:len(fq)-1], ".") {
		if err := hostLabel(label, underscore); err != "" {
			return "", mapping.FieldErrorf(field, "%q is not %s: %s", name, what, err)
		}
	}
	return fq, nil
}

// LookupName is how a name that is looked up, not stored, is read: as
// HostName writes it (lower case, a final dot), without its rules, so that
// a record stored before them can still be read, changed and removed.
func LookupName(field, name string) (string, error) {
	if name == "" {
		return "", mapping.FieldErrorf(field, "is required")
	}
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name, nil
}

// hostLabel says what is wrong with one label of a host name, or "";
// underscore allows '_' too.
func hostLabel(label string, underscore bool) string {
	switch {
	case label == "":
		return "it has an empty label"
	case len(label) > 63:
		return fmt.Sprintf("label %q is longer than 63 characters", label)
	case label[0] == '-' || label[len(label)-1] == '-':
		return fmt.Sprintf("label %q starts or ends with '-'", label)
	}
	for i := 0; i < len(label); i++ {
		if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' && underscore) {
			if underscore {
				return fmt.Sprintf("label %q has %q; a label is letters, digits, '-' and '_'", label, c)
			}
			return fmt.Sprintf("label %q has %q; a label is letters, digits and '-'", label, c)
		}
	}
	if strings.HasPrefix(label, "xn--") {
		if _, err := idna.Lookup.ToUnicode(label); err != nil {
			return fmt.Sprintf("label %q is not valid punycode (%v)", label, err)
		}
	}
	return ""
}

// Mailbox returns the SOA contact (RNAME) as a domain name. It accepts the
// mail form (hostmaster@example.net) and the DNS form
// (hostmaster.example.net). The domain must be a host name; the local part
// may also hold the other characters of an e-mail address (RFC 5322 atext,
// '.' in the mail form), but never a space, a control character or a byte
// outside ASCII, which would end up verbatim in every SOA answer.
func Mailbox(field, contact string) (string, error) {
	if contact == "" {
		return "", mapping.FieldErrorf(field, "is required")
	}
	local, domain, mail := strings.Cut(contact, "@")
	if !mail {
		// The DNS form: the first unescaped '.' ends the local part.
		i := 0
		for ; i < len(contact) && contact[i] != '.'; i++ {
			if contact[i] == '\\' {
				i++
			}
		}
		local, domain = strings.ReplaceAll(contact[:min(i, len(contact))], `\.`, "."), contact[min(i+1, len(contact)):]
	}
	if local == "" || len(local) > 63 {
		return "", mapping.FieldErrorf(field, "%q: the mailbox before the domain must be 1-63 characters", contact)
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+/=?^_`{|}~.-", c) >= 0) {
			return "", mapping.FieldErrorf(field, "%q: the mailbox has %q; write it as hostmaster@example.net", contact, c)
		}
	}
	d, err := HostName(field, domain)
	if err != nil {
		return "", mapping.FieldErrorf(field, "%q: the domain after the mailbox: %s", contact, strings.TrimPrefix(err.Error(), field+": "))
	}
	return strings.ToLower(strings.ReplaceAll(local, ".", `\.`)) + "." + d, nil
}

// UnicastAddr parses an address of one family that clients can be sent to;
// "" is the zero Addr (none). Documentation, private, shared (CGNAT) and
// benchmarking ranges are accepted, for labs and tests; what no client
// could use is not: unspecified, loopback, link-local, multicast, the
// broadcast address and the rest of 240.0.0.0/4, and 0.0.0.0/8.
func UnicastAddr(field, s string, v6 bool) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, mapping.FieldErrorf(field, "%q is not an IP address", s)
	case v6 && !a.Is6(), v6 && a.Is4In6():
		return a, mapping.FieldErrorf(field, "%q is not an IPv6 address", s)
	case !v6 && !a.Is4():
		return a, mapping.FieldErrorf(field, "%q is not an IPv4 address", s)
	case a.Zone() != "":
		return a, mapping.FieldErrorf(field, "%q has a zone; give a global address", s)
	}
	why := ""
	switch {
	case a.IsUnspecified():
		why = "the unspecified address"
	case a.IsLoopback():
		why = "a loopback address"
	case a.IsMulticast():
		why = "a multicast address"
	case a.IsLinkLocalUnicast():
		why = "a link-local address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		why = "the broadcast address"
	case a.Is4() && a.As4()[0] >= 240:
		why = "in the reserved range 240.0.0.0/4"
	case a.Is4() && a.As4()[0] == 0:
		why = `in 0.0.0.0/8 ("this network")`
	}
	if why != "" {
		return a, mapping.FieldErrorf(field, "%s is %s, which no client can reach; give a unicast address (documentation and private ranges are fine for labs)", a, why)
	}
	return a, nil
}

// DuplicateKey returns the path ("edges[2].ipv4") of the first key that
// appears twice in one object of a JSON document, or "". encoding/json
// lets the last one win, so {"ipv4":"192.0.2.9","ipv4":"192.0.2.10"} would
// store an address the sender may not have meant. Keys are compared as
// encoding/json matches them to fields: without regard to case. Call it on
// a document that decoded, which bounds its nesting.
func DuplicateKey(doc []byte) string {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	dup, _ := duplicateIn(dec, "")
	return dup
}

func duplicateIn(dec *json.Decoder, path string) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return "", err
			}
			key := k.(string)
			at := key
			if path != "" {
				at = path + "." + key
			}
			folded := strings.ToLower(key)
			if seen[folded] {
				return at, nil
			}
			seen[folded] = true
			if dup, err := duplicateIn(dec, at); dup != "" || err != nil {
				return dup, err
			}
		}
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if dup, err := duplicateIn(dec, fmt.Sprintf("%s[%d]", path, i)); dup != "" || err != nil {
				return dup, err
			}
		}
	default:
		return "", nil
	}
	_, err = dec.Token() // the closing delimiter
	return "", err
}
