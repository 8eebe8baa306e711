package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the CLI golden files")

// TestCLIGolden runs CLI commands against a real server and compares what
// they print, and the error they end with, to testdata/*.golden. Each golden
// file holds the command line, a "---" separator, then the expected output.
// Regenerate with `go test ./cmd/edgemap -run CLIGolden -update`.
func TestCLIGolden(t *testing.T) {
	runGoldens(t, [][2]string{
		{"edge-list", "edge list"},
		{"property-list-json", "property list --json"},
		{"zone-show", "zone show"},
		{"explain-mumbai", "map explain --property shop.cdn.example.net --client 203.0.113.9"},
		{"explain-no-location", "map explain --property video.cdn.example.net --client 198.18.99.7"},
		{"explain-aaaa", "map explain --property shop.cdn.example.net --client 2001:db8:2::1 --family AAAA"},
		// explain for queries whose ECS does not decide, as the wire answer
		// does not use it.
		// A private ECS network from a resolver in Frankfurt: the
		// resolver's address decides, and the scope keeps the answer to
		// 10.0.0.0/8.
		{"explain-private-ecs", "map explain --property shop.cdn.example.net --client 10.1.2.9 --resolver 198.18.2.53"},
		{"explain-private-ecs-no-resolver", "map explain --property shop.cdn.example.net --client 10.1.2.9"},
		{"explain-source-prefix-0", "map explain --property shop.cdn.example.net --client 198.18.1.9 --source-prefix 0 --resolver 198.18.3.53"},
		{"explain-resolver-only", "map explain --property shop.cdn.example.net --resolver 198.18.1.53"},
		{"explain-nodata", "map explain --property game.cdn.example.net --client 198.18.1.9 --family AAAA"},
		{"apply-unchanged", "apply -f ../../testdata/world.yaml"},
		{"edge-add", "edge add --id fra2 --ipv4 198.51.100.77 --lat 50.1 --lon 8.7 --pool global"},
		{"edge-set", "edge set --id fra2 --capacity 900"},
		{"edge-add-bad-ipv4", "edge add --id x1 --ipv4 192.0.2 --lat 1 --lon 2 --pool global"},
		{"edge-set-missing", "edge set --id nope --lat 3"},
		{"property-add-outside", "property add --name shop.example.org --pool global"},
		{"zone-set-bad-ns", "zone set --name cdn.example.net --ns ns1.cdn.example.net=192.0.2 --contact hostmaster@example.net"},
		// Nonsense the rules refuse (internal/config; validate_test.go
		// proves that nothing is stored).
		{"property-add-bad-char", "property add --name bad_name!.cdn.example.net --pool global"},
		{"property-add-space", `property add --name "a b.cdn.example.net" --pool global`},
		{"property-add-idn", "property add --name bücher.cdn.example.net --pool global"},
		{"property-add-not-utf8", `property add --name "\xe4pfel.cdn.example.net" --pool global`},
		{"edge-add-unspecified", "edge add --id x1 --ipv4 0.0.0.0 --lat 1 --lon 2 --pool global"},
		{"edge-add-broadcast", "edge add --id x1 --ipv4 255.255.255.255 --lat 1 --lon 2 --pool global"},
		{"edge-add-loopback", "edge add --id x1 --ipv4 127.0.0.1 --lat 1 --lon 2 --pool global"},
		{"edge-add-multicast", "edge add --id x1 --ipv4 224.0.0.251 --lat 1 --lon 2 --pool global"},
		{"edge-add-unspecified-v6", "edge add --id x1 --ipv6 :: --lat 1 --lon 2 --pool global"},
		{"zone-set-contact-newline", `zone set --name cdn.example.net --ns ns1.cdn.example.net=192.0.2.53 --contact "host\nmaster@example.net"`},
		{"apply-duplicate-key", "apply -f testdata/world-duplicate-key.yaml"},
		{"apply-loopback-edge", "apply -f testdata/world-loopback-edge.yaml"},
		// The target and key commands, printing only what does not depend
		// on the clock: no measurements exist (they would print their age)
		// and no key is created (it would print a random secret and its
		// creation time).
		{"target-add", "target add --block 198.18.3.0/24 --probe 198.18.3.10:443"},
		{"target-list", "target list"},
		{"target-list-json", "target list --json"},
		{"target-add-host-bits", "target add --block 198.18.4.7/24 --probe 198.18.4.7:443"},
		{"target-add-probe-outside", "target add --block 198.18.4.0/24 --probe 198.18.5.7:443"},
		{"target-add-duplicate", "target add --block 198.18.3.0/24 --probe 198.18.3.11:443"},
		{"target-rm", "target rm --block 198.18.3.0/24"},
		{"target-rm-missing", "target rm --block 198.18.3.0/24"},
		{"key-list-empty", "key list"},
		{"key-add-unknown-edge", "key add --id x1 --edge nope"},
		{"key-rm-missing", "key rm --id x1"},
		// The zone's content (records.go) and its delegation.
		{"zone-delegation", "zone delegation"},
		{"zone-set-bad-retry", "zone set --name cdn.example.net --ns ns1.cdn.example.net=192.0.2.53 --contact hostmaster@example.net --retry 20000"},
		{"record-list", "record list"},
		{"record-add-acme", "record add --name _acme-challenge.shop.cdn.example.net --type TXT --value gfj9Xq-Rg85nM --ttl 60"},
		{"record-add-acme-again", "record add --name _acme-challenge.shop.cdn.example.net --type txt --value gfj9Xq-Rg85nM --ttl 60"},
		{"record-add-acme-other-ttl", "record add --name _acme-challenge.shop.cdn.example.net --type TXT --value second-token"},
		{"record-list-name-json", "record list --name _acme-challenge.shop.cdn.example.net --json"},
		{"record-add-caa-bad-tag", `record add --name cdn.example.net --type CAA --value "0 issuemail letsencrypt.org"`},
		{"record-add-cname-apex", "record add --name cdn.example.net --type CNAME --value cdn.example.org"},
		{"record-add-cname-beside", "record add --name _acme-challenge.shop.cdn.example.net --type CNAME --value acme.example.org"},
		{"record-add-a-at-property", "record add --name shop.cdn.example.net --type A --value 198.51.100.9"},
		{"record-add-cname-dangling", "record add --name www.cdn.example.net --type CNAME --value shopp.cdn.example.net"},
		{"record-add-wildcard", "record add --name *.cdn.example.net --type TXT --value x"},
		{"record-add-ns", "record add --name sub.cdn.example.net --type NS --value ns.example.org"},
		{"record-add-mx-bad", "record add --name cdn.example.net --type MX --value mail.example.net"},
		{"record-rm-acme", "record rm --name _acme-challenge.shop.cdn.example.net --type TXT --value gfj9Xq-Rg85nM"},
		{"record-rm-missing", "record rm --name _acme-challenge.shop.cdn.example.net --type TXT"},
		// Last: it sets the zone whole, timers not given back to their defaults.
		{"zone-set-timers", "zone set --name cdn.example.net --ns ns1.cdn.example.net=192.0.2.53 --ns ns2.cdn.example.net=198.51.100.53 --contact hostmaster@example.net --ns-ttl 86400 --minimum 600"},
		{"zone-show-timers", "zone show"},
	})
}

// runGoldens runs each {golden, command line} in order against one new
// server with the demo world.
func runGoldens(t *testing.T, cases [][2]string) {
	s := startServer(t, demoConfig(t))
	for _, c := range cases {
		t.Run(c[0], func(t *testing.T) { goldenCLI(t, s, c[0], c[1]) })
	}
}

// goldenCLI runs one CLI command against s and compares what it prints,
// and the error it ends with, to testdata/<golden>.golden: the command
// line, a "---" separator, then the expected output. With -update it
// rewrites the file instead.
func goldenCLI(t *testing.T, s *server, golden, args string) {
	t.Helper()
	goldenRun(t, s, golden, args, nil, nil)
}

// goldenCLIWith is goldenCLI for a command line with placeholders for what
// changes from run to run (an address): each key of vars in args is
// replaced by its value to run the command, and the value by its key in
// what the command prints.
func goldenCLIWith(t *testing.T, s *server, golden, args string, vars map[string]string) {
	t.Helper()
	goldenRunVars(t, s, golden, args, vars, nil, nil)
}

// goldenRun is goldenCLI with stdout, the App's Writer, given (a file,
// for a command that looks at it) and the output normalized: a command
// line that names {api} (the server's URL) or {hostport} gets no --api of
// the test's, and the values that change from run to run are replaced
// in what it prints by placeholders (normalize).
func goldenRun(t *testing.T, s *server, golden, args string, stdout io.Writer, normalize func(string) string) {
	t.Helper()
	goldenRunVars(t, s, golden, args, nil, stdout, normalize)
}

// goldenRunVars is goldenRun and goldenCLIWith in one.
func goldenRunVars(t *testing.T, s *server, golden, args string, vars map[string]string, stdout io.Writer, normalize func(string) string) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = stdout, &out
	if stdout == nil {
		app.Writer = &out
	}
	hostport := strings.TrimPrefix(s.API, "http://")
	run := args
	for k, v := range vars {
		run = strings.ReplaceAll(run, k, v)
	}
	line := strings.NewReplacer("{api}", s.API, "{hostport}", hostport).Replace(run)
	argv := append([]string{"edgemap"}, splitArgs(t, line)...)
	if line == run {
		argv = append([]string{"edgemap", "--api", s.API}, splitArgs(t, line)...)
	}
	if err := app.Run(argv); err != nil {
		out.WriteString("error: " + err.Error() + "\n")
	}
	printed := strings.NewReplacer(s.API, "{api}", hostport, "{hostport}", userAgent(), "{agent}").Replace(out.String())
	for k, v := range vars {
		printed = strings.ReplaceAll(printed, v, k)
	}
	if normalize != nil {
		printed = normalize(printed)
	}
	got := "edgemap " + args + "\n---\n" + printed
	path := filepath.Join("testdata", golden+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// splitArgs splits a command line at spaces, except inside a double-quoted
// Go string literal ("a b", "host\nmaster"), which becomes one argument.
func splitArgs(t *testing.T, line string) []string {
	t.Helper()
	var out []string
	for _, tok := range regexp.MustCompile(`"(?:[^"\\]|\\.)*"|\S+`).FindAllString(line, -1) {
		if strings.HasPrefix(tok, `"`) {
			u, err := strconv.Unquote(tok)
			if err != nil {
				t.Fatalf("%s: %v", tok, err)
			}
			tok = u
		}
		out = append(out, tok)
	}
	return out
}
