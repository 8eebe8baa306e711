package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the CLI golden files")

// TestCLIGolden runs CLI commands against a real server and compares what
// they print, and the error they end with, to testdata/*.golden. Each golden
// file holds the command line, a "---" separator, then the expected output.
// Regenerate with `go test ./cmd/edgemap -run CLIGolden -update`.
func TestCLIGolden(t *testing.T) {
	s := startServer(t, demoConfig(t))
	cases := []struct {
		golden string
		args   string
	}{
		{"edge-list", "edge list"},
		{"property-list-json", "property list --json"},
		{"zone-show", "zone show"},
		{"explain-mumbai", "map explain --property shop.cdn.example.net --client 203.0.113.9"},
		{"explain-no-location", "map explain --property video.cdn.example.net --client 198.18.99.7"},
		{"explain-aaaa", "map explain --property shop.cdn.example.net --client 2001:db8:2::1 --family AAAA"},
		{"apply-unchanged", "apply -f ../../testdata/world.yaml"},
		{"edge-add", "edge add --id fra2 --ipv4 198.51.100.77 --lat 50.1 --lon 8.7 --pool global"},
		{"edge-set", "edge set --id fra2 --capacity 900"},
		{"edge-add-bad-ipv4", "edge add --id x1 --ipv4 192.0.2 --lat 1 --lon 2 --pool global"},
		{"edge-set-missing", "edge set --id nope --lat 3"},
		{"property-add-outside", "property add --name shop.example.org --pool global"},
		{"zone-set-bad-ns", "zone set --name cdn.example.net --ns ns1.cdn.example.net=192.0.2 --contact hostmaster@example.net"},
	}
	for _, tc := range cases {
		t.Run(tc.golden, func(t *testing.T) {
			goldenCLI(t, s, tc.golden, tc.args)
		})
	}
}

// goldenCLI runs one CLI command against s and compares what it prints,
// and the error it ends with, to testdata/<golden>.golden: the command
// line, a "---" separator, then the expected output. With -update it
// rewrites the file instead.
func goldenCLI(t *testing.T, s *server, golden, args string) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &out
	argv := append([]string{"edgemap", "--api", s.API}, strings.Fields(args)...)
	if err := app.Run(argv); err != nil {
		out.WriteString("error: " + err.Error() + "\n")
	}
	got := "edgemap " + args + "\n---\n" + out.String()
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
