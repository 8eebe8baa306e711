package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
)

// askTXT asks the server for name's TXT records over UDP, as a resolver
// does (EDNS, no cookie), and returns the rcode, the texts and the TTL.
func askTXT(t *testing.T, s *server, name string) (int, []string, uint32) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.SetEdns0(1232, false)
	r, _, err := new(dns.Client).Exchange(m, s.DNS.String())
	if err != nil {
		t.Fatalf("TXT %s: %v", name, err)
	}
	if !r.Authoritative {
		t.Errorf("TXT %s: AA clear", name)
	}
	var texts []string
	var ttl uint32
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			texts = append(texts, strings.Join(txt.Txt, ""))
			ttl = txt.Hdr.Ttl
		}
	}
	slices.Sort(texts)
	return r.Rcode, texts, ttl
}

// An ACME DNS-01 challenge set through the admin API is answered by the
// first query after the request returns: the write returns once the map
// that holds it is published. Removed, it is gone as fast.
func TestACMEChallengeThroughTheAPI(t *testing.T) {
	s := startServer(t, demoConfig(t))
	const name = "_acme-challenge.shop.cdn.example.net."
	if rcode, _, _ := askTXT(t, s, name); rcode != dns.RcodeNameError {
		t.Fatalf("before: rcode %s, want NXDOMAIN", dns.RcodeToString[rcode])
	}
	start := time.Now()
	spec := config.RecordSpec{Name: name, Type: "TXT", Value: "gfj9Xq-Rg85nM", TTL: edgetest.Ptr(uint32(60))}
	var rec config.Record
	if code := s.Call(t, http.MethodPost, "/v1/records", spec, &rec); code != http.StatusCreated {
		t.Fatalf("POST /v1/records: status %d", code)
	}
	rcode, texts, ttl := askTXT(t, s, name)
	t.Logf("challenge set and answered in %v", time.Since(start))
	if rcode != dns.RcodeSuccess || !slices.Equal(texts, []string{"gfj9Xq-Rg85nM"}) || ttl != 60 {
		t.Fatalf("after the API returned: rcode %s, %q, TTL %d; want the token, TTL 60", dns.RcodeToString[rcode], texts, ttl)
	}
	if rec != (config.Record{Name: name, Type: "TXT", Value: "gfj9Xq-Rg85nM", TTL: 60}) {
		t.Errorf("the API answered %+v", rec)
	}
	if code := s.Call(t, http.MethodDelete, "/v1/records?name="+name+"&type=TXT", nil, nil); code != http.StatusOK {
		t.Fatalf("DELETE /v1/records: status %d", code)
	}
	if rcode, _, _ := askTXT(t, s, name); rcode != dns.RcodeNameError {
		t.Errorf("after removal: rcode %s, want NXDOMAIN", dns.RcodeToString[rcode])
	}
}

// The hook scripts of dist/acme, run as certbot and lego run them with the
// real binary on PATH: each challenge is answered when its hook returns, a
// retried hook succeeds, and cleanup removes only its own token (a
// wildcard and its base name share the challenge name).
func TestACMEHookScripts(t *testing.T) {
	bin := edgemapBinary(t)
	s := startServer(t, demoConfig(t))
	env := append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "EDGEMAP_API="+s.API)
	hook := func(script string, extraEnv []string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join("dist", "acme", script), args...)
		cmd.Env = append(slices.Clone(env), extraEnv...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", script, args, err, out)
		}
	}
	const name = "_acme-challenge.shop.cdn.example.net."
	expect := func(step string, want ...string) {
		t.Helper()
		rcode, texts, _ := askTXT(t, s, name)
		if len(want) == 0 && rcode != dns.RcodeNameError || len(want) > 0 && !slices.Equal(texts, want) {
			t.Fatalf("%s: rcode %s, %q; want %q", step, dns.RcodeToString[rcode], texts, want)
		}
	}
	certbot := func(token string) []string {
		return []string{"CERTBOT_DOMAIN=shop.cdn.example.net", "CERTBOT_VALIDATION=" + token}
	}
	hook("certbot-auth-hook", certbot("base-token"))
	expect("certbot auth", "base-token")
	hook("certbot-auth-hook", certbot("base-token")) // a retry
	hook("certbot-auth-hook", certbot("wildcard-token"))
	expect("certbot auth for the wildcard", "base-token", "wildcard-token")
	hook("certbot-cleanup-hook", certbot("base-token"))
	expect("certbot cleanup of one", "wildcard-token")
	hook("certbot-cleanup-hook", certbot("wildcard-token"))
	expect("certbot cleanup")
	// A customer's name whose _acme-challenge is a CNAME to the property's.
	customer := []string{"CERTBOT_DOMAIN=www.shop.example", "CERTBOT_VALIDATION=customer-token", "EDGEMAP_ACME_NAME=" + name}
	hook("certbot-auth-hook", customer)
	expect("certbot auth for a customer's name", "customer-token")
	hook("certbot-cleanup-hook", customer)
	expect("certbot cleanup for a customer's name")

	hook("lego-exec", nil, "present", name, "lego-token", "120")
	expect("lego present", "lego-token")
	if _, _, ttl := askTXT(t, s, name); ttl != 120 {
		t.Errorf("lego's TTL: %d, want 120", ttl)
	}
	hook("lego-exec", nil, "cleanup", name, "lego-token", "120")
	expect("lego cleanup")
}

// The demo world's CAA, null MX and SPF records are answered from the
// world file, over UDP and TCP.
func TestWorldRecordsAnswered(t *testing.T) {
	s := startServer(t, demoConfig(t))
	for _, tc := range []struct {
		qtype uint16
		want  string
	}{
		{dns.TypeCAA, `cdn.example.net.	3600	IN	CAA	0 issue "letsencrypt.org"`},
		{dns.TypeMX, "cdn.example.net.	3600	IN	MX	0 ."},
		{dns.TypeTXT, `cdn.example.net.	3600	IN	TXT	"v=spf1 -all"`},
	} {
		for _, network := range []string{"udp", "tcp"} {
			m := new(dns.Msg)
			m.SetQuestion("cdn.example.net.", tc.qtype)
			r, _, err := (&dns.Client{Net: network}).Exchange(m, s.DNS.String())
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Answer) != 1 || r.Answer[0].String() != tc.want || !r.Authoritative {
				t.Errorf("%s %s: %v, want %s", network, dns.TypeToString[tc.qtype], r.Answer, tc.want)
			}
		}
	}
}
