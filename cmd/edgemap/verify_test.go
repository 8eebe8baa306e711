package main

import (
	"errors"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
)

// standInResolver stands in for a recursive resolver in the tests of
// `customer verify`: it answers the customers' zones from a table, asks the
// real edgemap server (forward, over UDP) for every name of cdn.example.net.,
// and follows CNAMEs across the two as a recursive resolver does. What is
// under test is verify's walk and its words, over real sockets.
type standInResolver struct {
	zone    string // cdn.example.net.
	edgemap string // its DNS address
	table   map[string][]dns.RR
	broken  map[string]bool // names answered SERVFAIL, as a lame delegation is
}

func newStandIn(t *testing.T, edgemapDNS string, zoneFile string, broken ...string) string {
	t.Helper()
	r := &standInResolver{zone: "cdn.example.net.", edgemap: edgemapDNS, table: map[string][]dns.RR{}, broken: map[string]bool{}}
	for _, line := range strings.Split(strings.TrimSpace(zoneFile), "\n") {
		rr, err := dns.NewRR(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("stand-in zone line %q: %v", line, err)
		}
		name := strings.ToLower(rr.Header().Name)
		r.table[name] = append(r.table[name], rr)
	}
	for _, b := range broken {
		r.broken[b] = true
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: r}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		srv.Shutdown()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

func (r *standInResolver) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	if len(q.Question) == 1 {
		m.Answer, m.Rcode = r.resolve(strings.ToLower(q.Question[0].Name), q.Question[0].Qtype)
	}
	w.WriteMsg(m)
}

// resolve answers name and qtype recursively: CNAMEs are followed (but not
// for a CNAME query), a loop or a long chain ends in SERVFAIL.
func (r *standInResolver) resolve(name string, qtype uint16) ([]dns.RR, int) {
	var answer []dns.RR
	for range 16 {
		if r.broken[name] {
			return nil, dns.RcodeServerFailure
		}
		if dns.IsSubDomain(r.zone, name) {
			q := new(dns.Msg)
			q.SetQuestion(name, qtype)
			q.RecursionDesired = false
			resp, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, r.edgemap)
			if err != nil {
				return nil, dns.RcodeServerFailure
			}
			answer = append(answer, resp.Answer...)
			// edgemap follows its own CNAMEs; one out of the zone is ours.
			if n := len(resp.Answer); n > 0 && qtype != dns.TypeCNAME {
				if c, ok := resp.Answer[n-1].(*dns.CNAME); ok && !dns.IsSubDomain(r.zone, c.Target) {
					name = strings.ToLower(c.Target)
					continue
				}
			}
			return answer, resp.Rcode
		}
		rrs, exists := r.table[name]
		if !exists {
			return answer, dns.RcodeNameError
		}
		if c, ok := rrs[0].(*dns.CNAME); ok && qtype != dns.TypeCNAME {
			answer = append(answer, c)
			name = strings.ToLower(c.Target)
			continue
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == qtype {
				answer = append(answer, rr)
			}
		}
		return answer, dns.RcodeSuccess
	}
	return nil, dns.RcodeServerFailure
}

// customerZones are the customers' zones the stand-in resolver answers.
var customerZones = `
www.shop.example. 300 IN CNAME shop.cdn.example.net.
alias.shop.example. 300 IN CNAME www.shop.example.
edge.shop.example. 300 IN CNAME www.cdn.example.net.
naked.shop.example. 300 IN A 203.0.113.5
empty.shop.example. 300 IN TXT "no address"
typo.shop.example. 300 IN CNAME shopp.cdn.example.net.
host.shop.example. 300 IN CNAME ns1.cdn.example.net.
away.shop.example. 300 IN CNAME cdn.other.example.
cdn.other.example. 300 IN A 198.51.100.200
loop1.shop.example. 300 IN CNAME loop2.shop.example.
loop2.shop.example. 300 IN CNAME loop1.shop.example.
long0.shop.example. 300 IN CNAME long1.shop.example.
long1.shop.example. 300 IN CNAME long2.shop.example.
long2.shop.example. 300 IN CNAME long3.shop.example.
long3.shop.example. 300 IN CNAME long4.shop.example.
long4.shop.example. 300 IN CNAME long5.shop.example.
long5.shop.example. 300 IN CNAME long6.shop.example.
long6.shop.example. 300 IN CNAME long7.shop.example.
long7.shop.example. 300 IN CNAME long8.shop.example.
long8.shop.example. 300 IN CNAME shop.cdn.example.net.
lame.shop.example. 300 IN CNAME shop.broken.example.
`

// TestCustomerVerifyGolden runs `customer verify` against a real edgemap
// serve (the demo world, with www.cdn.example.net. an alias of shop) behind
// a stand-in recursive resolver, and compares what it prints to its
// goldens. $RESOLVER stands for the resolver's address.
func TestCustomerVerifyGolden(t *testing.T) {
	s := startServer(t, demoConfig(t))
	alias := config.RecordSpec{Name: "www.cdn.example.net", Type: "CNAME", Value: "shop.cdn.example.net"}
	if code := s.Call(t, http.MethodPost, "/v1/records", alias, nil); code != http.StatusCreated {
		t.Fatalf("add the alias: status %d", code)
	}
	resolver := newStandIn(t, s.DNS.String(), customerZones, "shop.broken.example.")
	for _, c := range [][2]string{
		{"verify-ok", "customer verify www.shop.example --resolver $RESOLVER"},
		{"verify-two-hops", "customer verify alias.shop.example. --resolver $RESOLVER"},
		{"verify-through-zone-alias", "customer verify edge.shop.example --resolver $RESOLVER"},
		{"verify-property-itself", "customer verify video.cdn.example.net --resolver $RESOLVER"},
		{"verify-no-cname", "customer verify naked.shop.example --resolver $RESOLVER"},
		{"verify-no-address", "customer verify empty.shop.example --resolver $RESOLVER"},
		{"verify-nxdomain", "customer verify nope.shop.example --resolver $RESOLVER"},
		{"verify-typo", "customer verify typo.shop.example --resolver $RESOLVER"},
		{"verify-not-a-property", "customer verify host.shop.example --resolver $RESOLVER"},
		{"verify-elsewhere", "customer verify away.shop.example --resolver $RESOLVER"},
		{"verify-loop", "customer verify loop1.shop.example --resolver $RESOLVER"},
		{"verify-too-long", "customer verify long0.shop.example --resolver $RESOLVER"},
		{"verify-servfail", "customer verify lame.shop.example --resolver $RESOLVER"},
		{"verify-bad-name", "customer verify www..shop.example --resolver $RESOLVER"},
	} {
		t.Run(c[0], func(t *testing.T) { goldenCLIWith(t, s, c[0], c[1], map[string]string{"$RESOLVER": resolver}) })
	}
	t.Run("no resolver", func(t *testing.T) {
		// A port nothing listens on: the kernel refuses the datagram.
		goldenCLIWith(t, s, "verify-no-resolver", "customer verify www.shop.example --resolver $RESOLVER --timeout 2s",
			map[string]string{"$RESOLVER": closedUDPPort(t)})
	})
	t.Run("silent resolver", func(t *testing.T) {
		// A socket that reads and never answers: verify gives up after --timeout.
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		goldenCLIWith(t, s, "verify-timeout", "customer verify www.shop.example --resolver $RESOLVER --timeout 300ms",
			map[string]string{"$RESOLVER": pc.LocalAddr().String()})
	})
}

// closedUDPPort is a loopback UDP address nothing listens on.
func closedUDPPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// The verdict is the exit status: the real binary exits 0 when the name
// reaches a property and 1 when it does not.
func TestCustomerVerifyExitStatus(t *testing.T) {
	bin := edgemapBinary(t)
	s := startServer(t, demoConfig(t))
	resolver := newStandIn(t, s.DNS.String(), customerZones)
	for name, want := range map[string]int{"www.shop.example": 0, "naked.shop.example": 1, "loop1.shop.example": 1} {
		out, code := runBinary(t, bin, "--api", s.API, "customer", "verify", name, "--resolver", resolver)
		if code != want {
			t.Errorf("verify %s: exit status %d, want %d; output:\n%s", name, code, want, out)
		}
	}
}

// runBinary runs the binary and returns its output and exit status.
func runBinary(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", bin, err)
	}
	return string(out), 0
}
