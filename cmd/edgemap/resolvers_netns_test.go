package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/netemu"
)

// The real-resolver test puts a caching resolver that honours ECS scopes
// (Unbound, PowerDNS Recursor) in front of a real `edgemap serve`, both in
// one network namespace, and checks what users get from the resolver's
// cache, which is what a scope is a promise to. The namespace is a netemu
// host with no other host: besides loopback its only link is a TUN device
// whose far end has nowhere to deliver, and it has no default route, so
// the resolvers can never reach a root server. Every address below is
// assigned inside it.
const (
	rrEdgemap    = "198.18.200.10" // edgemap serve: DNS :53, API :8053
	rrListen     = "198.18.200.53" // the resolver listens here
	rrOutgoing   = "198.18.2.53"   // and asks edgemap from here: Frankfurt
	rrPrivate    = "10.1.2.10"     // an internal client
	rrPrivate2   = "10.9.9.10"     // another one, in another /24 of 10/8
	rrSeoul      = "198.18.1.10"
	rrNewYork    = "198.18.3.10"
	rrSaoPaulo   = "198.18.4.10"
	rrSydney     = "198.18.5.10"
	rrParis      = "198.19.1.10" // 198.19.0.0/16 is one GeoIP network
	rrParisOther = "198.19.2.10"
)

// realResolver is one resolver program: how to find it and how to run it.
type realResolver struct {
	name    string
	program string
	// config writes the configuration into dir and returns the command
	// line that runs the program at path in the foreground.
	config func(t *testing.T, path, dir string) []string
}

var unboundResolver = realResolver{
	name:    "unbound",
	program: "unbound",
	config: func(t *testing.T, program, dir string) []string {
		out, _ := exec.Command(program, "-V").CombinedOutput()
		if !strings.Contains(string(out), "subnetcache") {
			t.Skipf("this unbound has no subnetcache module (built without --enable-subnet): %s", out)
		}
		// A stub zone for the CDN zone at edgemap, no validator (it would
		// look for DS records upstream), and ECS for every client sent to
		// edgemap: /24 of the client's address, or the ECS the client
		// sent itself.
		conf := fmt.Sprintf(`server:
  verbosity: 1
  interface: %[1]s
  port: 53
  outgoing-interface: %[2]s
  do-ip6: no
  access-control: 0.0.0.0/0 allow
  chroot: ""
  username: ""
  directory: %[3]q
  pidfile: "%[3]s/unbound.pid"
  use-syslog: no
  logfile: ""
  do-not-query-localhost: no
  qname-minimisation: no
  num-threads: 1
  module-config: "subnetcache iterator"
  send-client-subnet: %[4]s
  client-subnet-always-forward: yes
  max-client-subnet-ipv4: 24
  max-client-subnet-ipv6: 56
stub-zone:
  name: "cdn.example.net."
  stub-addr: %[4]s
`, rrListen, rrOutgoing, dir, rrEdgemap)
		path := filepath.Join(dir, "unbound.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{program, "-d", "-c", path}
	},
}

var pdnsResolver = realResolver{
	name:    "pdns-recursor",
	program: "pdns_recursor",
	config: func(t *testing.T, program, dir string) []string {
		// 4.x before 4.5 calls the allow list a whitelist.
		allow := "edns-subnet-allow-list"
		if out, _ := exec.Command(program, "--config=default").CombinedOutput(); !strings.Contains(string(out), allow) {
			allow = "edns-subnet-whitelist"
		}
		// forward-zones asks edgemap without recursion, as an
		// authoritative server; use-incoming-edns-subnet passes on the ECS
		// a client sends, and ecs-add-for's default sends /24 of the
		// client's public address otherwise. No security polling.
		conf := fmt.Sprintf(`local-address=%s
local-port=53
query-local-address=%s
allow-from=0.0.0.0/0
forward-zones=cdn.example.net=%s
%s=%s/32
use-incoming-edns-subnet=yes
ecs-ipv4-bits=24
dnssec=off
daemon=no
write-pid=no
socket-dir=%s
threads=1
pdns-distributes-queries=no
security-poll-suffix=
quiet=no
`, rrListen, rrOutgoing, rrEdgemap, allow, rrEdgemap, dir)
		if err := os.WriteFile(filepath.Join(dir, "recursor.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{program, "--config-dir=" + dir}
	},
}

func TestRealResolversCacheByScope(t *testing.T) {
	for _, r := range []realResolver{unboundResolver, pdnsResolver} {
		t.Run(r.name, func(t *testing.T) { realResolverSequence(t, r) })
	}
}

// realResolverSequence is the sequence through one resolver: an
// internal client with a private ECS first, then clients in three regions,
// each of which must get its own region's edge from edgemap rather than
// the internal client's answer from the cache; then two /24s of one GeoIP
// network (Paris's /16), the second of which the resolver must answer from
// its cache. Whether edgemap was asked is read from its query counter.
func realResolverSequence(t *testing.T, r realResolver) {
	if err := netemu.Available(); err != nil {
		t.Skipf("real-resolver test skipped (needs root, iproute2 and /dev/net/tun; CI runs it as root): %v", err)
	}
	program, err := exec.LookPath(r.program)
	if err != nil {
		// Debian installs both in /usr/sbin, not always on PATH.
		program, err = exec.LookPath(filepath.Join("/usr/sbin", r.program))
	}
	if err != nil {
		t.Skipf("real-resolver test skipped: %s is not installed (apt-get install %s; .ci/run does)", r.program, r.name)
	}
	bin := edgemapBinary(t)
	dir := t.TempDir()
	n, err := netemu.New("rr" + strings.ReplaceAll(r.name, "-", ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	var addrs []netip.Prefix
	for _, a := range []string{rrEdgemap, rrListen, rrOutgoing, rrSeoul, rrNewYork, rrSaoPaulo, rrSydney, rrParis, rrParisOther} {
		addrs = append(addrs, netip.PrefixFrom(netip.MustParseAddr(a), 32))
	}
	h, err := n.AddHost("all", addrs...)
	if err != nil {
		t.Fatal(err)
	}
	ns := filepath.Base(h.NetnsPath())
	for _, a := range []string{rrPrivate, rrPrivate2} {
		if out, err := exec.Command("ip", "-n", ns, "address", "add", a+"/32", "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("ip address add %s: %v: %s", a, err, out)
		}
	}
	run := func(name string, argv ...string) {
		logPath := filepath.Join(dir, name+".log")
		f, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := h.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			f.Close()
			if t.Failed() {
				raw, _ := os.ReadFile(logPath)
				t.Logf("--- %s log (last 3000 bytes)\n%s", name, tail(raw, 3000))
			}
		})
	}

	world, _ := filepath.Abs(edgetest.World)
	geo, _ := filepath.Abs(edgetest.GeoIP)
	run("serve", bin, "serve", "--db", filepath.Join(dir, "edgemap.db"), "--world", world, "--geoip", geo,
		"--listen", rrEdgemap+":53", "--api-listen", rrEdgemap+":8053", "--api-token", labToken,
		"--node-id", "ns1", "--log-format", "console")
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = h.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	// Generous bounds: a shared CI machine may start processes slowly.
	edgetest.Eventually(t, 15*time.Second, "edgemap serve answers /healthz", func() bool {
		resp, err := httpc.Get("http://" + rrEdgemap + ":8053/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	run(r.name, r.config(t, program, dir)...)
	edgetest.Eventually(t, 15*time.Second, r.name+" answers for the zone", func() bool {
		m := new(dns.Msg)
		m.SetQuestion("cdn.example.net.", dns.TypeSOA)
		resp, err := exchangeIn(h, rrOutgoing, m)
		return err == nil && resp.Rcode == dns.RcodeSuccess && len(resp.Answer) == 1
	})

	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	edgeByAddr := map[string]string{}
	for _, e := range w.Edges {
		if e.IPv4 != nil {
			edgeByAddr[*e.IPv4] = e.ID
		}
	}
	// queries is how many A queries edgemap has answered.
	queryLine := regexp.MustCompile(`(?m)^edgemap_dns_queries_total\{qtype="A",rcode="[^"]*"\} (\S+)$`)
	queries := func() int {
		resp, err := httpc.Get("http://" + rrEdgemap + ":8053/metrics")
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		sum := 0.0
		for _, m := range queryLine.FindAllSubmatch(body, -1) {
			v, _ := strconv.ParseFloat(string(m[1]), 64)
			sum += v
		}
		return int(sum)
	}
	// ask queries the resolver as a user at from would, with an ECS
	// option of its own when ecs is set, and says which edge it got and
	// whether edgemap was asked for it.
	ask := func(who, from, ecs, wantEdge string, wantAsked bool) {
		t.Helper()
		before := queries()
		m := new(dns.Msg)
		m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
		if ecs != "" {
			p := netip.MustParsePrefix(ecs)
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(p.Bits()), Address: p.Addr().AsSlice()})
		}
		resp, err := exchangeIn(h, from, m)
		if err != nil {
			t.Errorf("%s (%s): %v", who, from, err)
			return
		}
		var got []string
		for _, rr := range resp.Answer {
			if a, ok := rr.(*dns.A); ok {
				got = append(got, edgeByAddr[a.A.String()]+" "+a.A.String())
			}
		}
		asked := queries() - before
		what := "edgemap was asked"
		if asked == 0 {
			what = "the resolver answered from its cache"
		}
		t.Logf("%-38s from %-11s got %v; %s", who, from, got, what)
		if len(got) != 1 || !strings.HasPrefix(got[0], wantEdge+" ") {
			t.Errorf("%s (%s) got %v, want %s (%s)", who, from, got, wantEdge, what)
		}
		// A resolver may retry on a slow machine: more than one counts as
		// asked too.
		if wantAsked && asked == 0 {
			t.Errorf("%s (%s): edgemap answered no query for it: %s", who, from, what)
		}
		if !wantAsked && asked != 0 {
			t.Errorf("%s (%s): edgemap answered %d queries for it, want 0: the resolver should have used its cache", who, from, asked)
		}
	}

	// The internal client is answered for the resolver's own address, in
	// Frankfurt: the private ECS says nothing about where the user is.
	ask("internal client, ECS 10.1.2.0/24", rrPrivate, "10.1.2.0/24", "fra1", true)
	// Users elsewhere must not get that answer from the cache.
	ask("Seoul", rrSeoul, "", "sel1", true)
	ask("New York", rrNewYork, "", "iad1", true)
	ask("Sao Paulo", rrSaoPaulo, "", "gru1", true)
	// One GeoIP network, two /24s: the /16 scope serves the second from
	// the cache.
	ask("Paris, 198.19.1.0/24", rrParis, "", "lon1", true)
	ask("Paris, 198.19.2.0/24 (same /16)", rrParisOther, "", "lon1", false)
	// The counter is live: a new region is asked for.
	ask("Sydney", rrSydney, "", "syd1", true)
	// The internal answer's scope is all of 10/8: one cache entry for it.
	ask("another internal client, 10.9.9.0/24", rrPrivate2, "10.9.9.0/24", "fra1", false)
}

// exchangeIn sends m to the resolver from the local address from, inside
// h's namespace, over UDP.
func exchangeIn(h *netemu.Host, from string, m *dns.Msg) (*dns.Msg, error) {
	var resp *dns.Msg
	err := h.Do(func() error {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}
		conn, err := d.Dial("udp", rrListen+":53")
		if err != nil {
			return err
		}
		defer conn.Close()
		// The resolver may itself wait for edgemap; well under its own
		// timeouts on an idle machine, generous for a busy one.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		dc := &dns.Conn{Conn: conn}
		if err := dc.WriteMsg(m); err != nil {
			return err
		}
		resp, err = dc.ReadMsg()
		return err
	})
	return resp, err
}
