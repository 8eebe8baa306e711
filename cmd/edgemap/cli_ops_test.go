package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
)

// timesAndPorts replaces what changes between runs in what the operator
// commands print: local times, loopback ports, the test GeoIP database's
// absolute path.
func timesAndPorts(s string) string {
	s = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`).ReplaceAllString(s, "{time}")
	s = regexp.MustCompile(`127\.0\.0\.1:\d{5}`).ReplaceAllString(s, "127.0.0.1:{port}") // ephemeral, not 8053
	return strings.ReplaceAll(s, edgetest.GeoIP, "{geoip}")
}

// TestCLIGoldenOperator runs the operator's commands of issue 14 and its
// papercuts against a real server, in order, and compares what they print
// to testdata/*.golden (see TestCLIGolden; -update rewrites them).
func TestCLIGoldenOperator(t *testing.T) {
	s := startServer(t, demoConfig(t))
	run := func(golden, args string) {
		t.Run(golden, func(t *testing.T) { goldenRun(t, s, golden, args, nil, timesAndPorts) })
	}
	// A dry run prints the diff, field by field, and changes nothing; a
	// prune that would leave a probe key bound to a removed edge is
	// refused unless the keys go too; a file of the zone alone prunes
	// nothing.
	run("apply-dry-run", "apply -f testdata/world-next.yaml --prune --dry-run")
	if code := s.Call(t, "POST", "/v1/keys", config.KeySpec{ID: "syd1", Edge: "syd1"}, nil); code != http.StatusCreated {
		t.Fatalf("key add: %d", code)
	}
	run("apply-prune-orphans-key", "apply -f testdata/world-next.yaml --prune")
	run("apply-prune-keys-dry-run", "apply -f testdata/world-next.yaml --prune --prune-keys --dry-run")
	run("apply-prune-keys", "apply -f testdata/world-next.yaml --prune --prune-keys")
	run("apply-prune-zone-only", "apply -f testdata/world-zone-only.yaml --prune")
	run("events-after-apply", "events --changes --limit 4")

	// Offline checks: every error, each naming its field.
	run("check-ok", "check -f ../../testdata/world.yaml")
	run("check-bad", "check -f testdata/world-bad.yaml")
	run("check-typo", "check testdata/world-typo.yaml ../../testdata/world.yaml")

	// --ns is not split at its comma; repeated for one name server, its
	// addresses add up; zone set prints the serial it committed.
	run("zone-set-ns-comma", "zone set --name cdn.example.net --ns ns1.cdn.example.net=192.0.2.53 --ns ns2.cdn.example.net=198.51.100.53,2001:db8:53::2 --contact dns@example.net")
	run("zone-show-ns-comma", "zone show")
	run("zone-set-ns-repeated", "zone set --name cdn.example.net --ns ns1.cdn.example.net=192.0.2.53 --ns ns2.cdn.example.net=198.51.100.53 --ns ns2.cdn.example.net=2001:db8:53::2 --contact hostmaster@example.net")
	run("zone-set-ns-two-v4", "zone set --name cdn.example.net --ns ns1.cdn.example.net=192.0.2.53,192.0.2.54 --contact hostmaster@example.net")

	// rm takes its record as the argument, as drain does.
	run("edge-add-tmp", "edge add --id tmp1 --ipv4 198.51.100.9 --lat 1 --lon 2 --pool global")
	run("edge-rm-positional", "edge rm tmp1")
	run("edge-rm-none", "edge rm")
	run("edge-rm-two", "edge rm a b")
	run("edge-rm-both-ways", "edge rm --id a b")
	run("target-rm-positional", "target rm 198.18.1.0/24")

	// Help: placeholders not mangled from backquotes, one default per
	// flag, every flag with its usage.
	run("help-property-add", "property add --help")
	run("help-property-set", "property set --help")
	run("help-probe", "probe --help")
	run("help-edge-drain", "edge drain --help")

	// Values that do not parse say what to write.
	run("serve-interval-no-unit", "serve --map-interval 10")
	run("edge-add-bad-lat", "edge add --id x1 --ipv4 192.0.2.77 --lat north --lon 2 --pool global")
	run("property-set-negative-ttl", "property set --name shop.cdn.example.net --ttl -5")
	run("serve-short-token", "serve --api-token x")

	// --api without a scheme is http; --api and --token after the
	// subcommand.
	run("api-no-scheme", "--api {hostport} zone show")
	run("api-after-subcommand", "zone show --api {hostport}")
	run("api-bad-scheme", "--api ftp://{hostport} zone show")

	// The agent: --interval 1s alone works (--timeout follows it), and a
	// key every collector refuses stops it.
	run("probe-unknown-key", "probe --edge fra1 --collector {api} --key-id nope --secret-file testdata/probe-unknown.secret --interval 1s --log-level fatal")
}

// TestCLIGoldenToken: --token after the subcommand is the one sent.
func TestCLIGoldenToken(t *testing.T) {
	cfg := demoConfig(t)
	cfg.APIToken = strings.Repeat("t0k3n", 8)
	s := startServer(t, cfg)
	for _, c := range [][2]string{
		{"token-after-subcommand", "property list --api {api} --token " + cfg.APIToken},
		{"token-wrong-after-subcommand", "property list --api {api} --token " + strings.Repeat("x", 32)},
		{"token-global-overridden", "--token " + strings.Repeat("x", 32) + " property list --api {api} --token " + cfg.APIToken},
	} {
		t.Run(c[0], func(t *testing.T) { goldenRun(t, s, c[0], c[1], nil, nil) })
	}
}

// TestKeyAddRefusesAReadableFile: `key add > FILE` into a file others can
// read makes no key and says how to make the file private; into a private
// file it prints the secret there.
func TestKeyAddRefusesAReadableFile(t *testing.T) {
	s := startServer(t, demoConfig(t))
	dir := t.TempDir()
	open := func(name string, mode os.FileMode) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Chmod(mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	readable := open("fra1.key", 0o644)
	goldenRun(t, s, "key-add-readable-file", "key add --id fra1 --edge fra1", readable, func(out string) string {
		return strings.ReplaceAll(out, dir, "{dir}")
	})
	var keys []config.Key
	if s.Call(t, "GET", "/v1/keys", nil, &keys); len(keys) != 0 {
		t.Fatalf("a key was made: %+v", keys)
	}
	private := open("fra1-private.key", 0o600)
	app := newApp()
	var stderr bytes.Buffer
	app.Writer, app.ErrWriter = private, &stderr
	if err := app.Run([]string{"edgemap", "--api", s.API, "key", "add", "--id", "fra1", "--edge", "fra1"}); err != nil {
		t.Fatalf("key add into a private file: %v", err)
	}
	raw, err := os.ReadFile(private.Name())
	if err != nil || len(strings.TrimSpace(string(raw))) != 64 {
		t.Fatalf("the private file holds %q (%v), want the secret", raw, err)
	}
}

// TestZoneSetNSCommaOnTheWire: the README's name server, set through the
// CLI with its comma, is answered with its IPv4 and IPv6 glue and no name
// server called "2001:db8:53::2." (issue 14).
func TestZoneSetNSCommaOnTheWire(t *testing.T) {
	s := startServer(t, demoConfig(t))
	app := newApp()
	app.Writer, app.ErrWriter = &bytes.Buffer{}, &bytes.Buffer{}
	if err := app.Run([]string{"edgemap", "--api", s.API, "zone", "set", "--name", "cdn.example.net",
		"--ns", "ns1.cdn.example.net=192.0.2.53", "--ns", "ns2.cdn.example.net=198.51.100.53,2001:db8:53::2",
		"--contact", "dns@example.net"}); err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion("cdn.example.net.", dns.TypeNS)
	m.SetEdns0(1232, false)
	r, _, err := new(dns.Client).Exchange(m, s.DNS.String())
	if err != nil {
		t.Fatal(err)
	}
	var ns, glue []string
	for _, rr := range r.Answer {
		if n, ok := rr.(*dns.NS); ok {
			ns = append(ns, n.Ns)
		}
	}
	for _, rr := range r.Extra {
		switch a := rr.(type) {
		case *dns.A:
			glue = append(glue, a.Hdr.Name+" "+a.A.String())
		case *dns.AAAA:
			glue = append(glue, a.Hdr.Name+" "+a.AAAA.String())
		}
	}
	wantNS := "ns1.cdn.example.net. ns2.cdn.example.net."
	wantGlue := "ns1.cdn.example.net. 192.0.2.53 ns2.cdn.example.net. 198.51.100.53 ns2.cdn.example.net. 2001:db8:53::2"
	if strings.Join(ns, " ") != wantNS || strings.Join(glue, " ") != wantGlue {
		t.Fatalf("NS %v glue %v; want %s with %s", ns, glue, wantNS, wantGlue)
	}
	var soa *dns.SOA
	m.SetQuestion("cdn.example.net.", dns.TypeSOA)
	if r, _, err = new(dns.Client).Exchange(m, s.DNS.String()); err == nil && len(r.Answer) == 1 {
		soa, _ = r.Answer[0].(*dns.SOA)
	}
	if soa == nil || soa.Mbox != "dns.example.net." {
		t.Fatalf("SOA %v (%v): want the new contact", soa, err)
	}
}

// TestEdgeListShowsHealth: an edge whose check fails is listed down, with
// what says so and why; a drained one draining (issue 14: "active").
func TestEdgeListShowsHealth(t *testing.T) {
	s := startServer(t, demoConfig(t))
	if code := s.Call(t, "PATCH", "/v1/edges/fra1", config.EdgeSpec{Check: edgetest.Ptr("tcp://" + edgetest.ClosedPort(t))}, nil); code != http.StatusOK {
		t.Fatalf("set check: %d", code)
	}
	if code := s.Call(t, "POST", "/v1/edges/lon1/drain", nil, nil); code != http.StatusOK {
		t.Fatalf("drain: %d", code)
	}
	list := func() string {
		var out bytes.Buffer
		app := newApp()
		app.Writer, app.ErrWriter = &out, &out
		if err := app.Run([]string{"edgemap", "edge", "list", "--api", s.API}); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	row := func(out, id string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, id+" ") {
				return l
			}
		}
		return ""
	}
	// Down after 3 failed checks 200 ms apart (demoConfig); 5 s is
	// generous for a shared machine.
	var out string
	edgetest.Eventually(t, 5*time.Second, "fra1 listed down", func() bool {
		out = list()
		return strings.Contains(row(out, "fra1"), " down ")
	})
	if r := row(out, "fra1"); !regexp.MustCompile(`down\s+check down since \S+ \S+: tcp://127\.0\.0\.1:\d+ failed 3 times in a row: .*connection refused`).MatchString(r) {
		t.Errorf("fra1: %q; want down, by its check, with the error", r)
	}
	if r := row(out, "lon1"); !strings.Contains(r, " draining ") {
		t.Errorf("lon1: %q; want draining", r)
	}
	if r := row(out, "iad1"); !regexp.MustCompile(`\s+up\s+-$`).MatchString(r) {
		t.Errorf("iad1: %q; want up, nothing said", r)
	}
	var edges []config.EdgeState
	s.Call(t, "GET", "/v1/edges", nil, &edges)
	for _, e := range edges {
		if e.ID == "fra1" && (e.State != "down" || e.Health == nil || e.Health.Source != "check" || e.Health.Up) {
			t.Errorf("GET /v1/edges fra1: %+v %+v; want state down, health from its check", e, e.Health)
		}
	}
}

// TestEveryFlagIsExplained walks every command's flags: each has a usage,
// none a backquote (urfave/cli takes `x` for the value's placeholder:
// "--secret-file edgemap key add"), and no help line says "(default"
// twice (issue 14: "(default 20) (default: 0)").
func TestEveryFlagIsExplained(t *testing.T) {
	app := newApp()
	var walk func(path string, cmds []*cli.Command)
	check := func(path string, flags []cli.Flag) {
		for _, f := range flags {
			df, ok := f.(cli.DocGenerationFlag)
			if !ok {
				continue
			}
			name := path + " --" + f.Names()[0]
			if strings.TrimSpace(df.GetUsage()) == "" {
				t.Errorf("%s has no usage", name)
			}
			if strings.Contains(df.GetUsage(), "`") {
				t.Errorf("%s: usage %q has a backquote", name, df.GetUsage())
			}
			if line := f.String(); strings.Count(line, "(default") > 1 {
				t.Errorf("%s: %q", name, line)
			}
		}
	}
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			check(path+" "+c.Name, c.Flags)
			walk(path+" "+c.Name, c.Subcommands)
		}
	}
	check("edgemap", app.Flags)
	walk("edgemap", app.Commands)
}
