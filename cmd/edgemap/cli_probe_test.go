package main

import "testing"

// TestCLIProbeGolden covers the target and key commands. The cases run in
// order against one server and only print what does not depend on the
// clock: no measurements exist (they would print their age) and no key is
// created (it would print a random secret and its creation time).
// Regenerate with `go test ./cmd/edgemap -run CLIProbeGolden -update`.
func TestCLIProbeGolden(t *testing.T) {
	s := startServer(t, demoConfig(t))
	cases := []struct {
		golden string
		args   string
	}{
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
	}
	for _, tc := range cases {
		t.Run(tc.golden, func(t *testing.T) { goldenCLI(t, s, tc.golden, tc.args) })
	}
}
