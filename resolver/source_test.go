package resolver

import (
	"net/netip"
	"testing"
)

// TestPlausibleSource: which sources a UDP query may come from. The real
// packets (port 7, raw multicast and broadcast sources) are sent by
// cmd/edgemap's TestImpossibleSourcesAreDropped.
func TestPlausibleSource(t *testing.T) {
	for _, tc := range []struct {
		addr string
		port uint16
		ok   bool
	}{
		{"192.0.2.1", 53, true}, // a resolver configured to send from 53
		{"192.0.2.1", 1024, true},
		{"192.0.2.1", 33000, true},
		{"2001:db8::1", 65535, true},
		{"10.1.2.3", 40000, true},
		{"127.0.0.1", 40000, true},
		{"192.0.2.1", 0, false},
		{"192.0.2.1", 7, false},
		{"192.0.2.1", 13, false},
		{"192.0.2.1", 17, false},
		{"192.0.2.1", 19, false},
		{"192.0.2.1", 37, false},
		{"192.0.2.1", 123, false},
		{"0.0.0.0", 40000, false},
		{"0.1.2.3", 40000, false},
		{"::", 40000, false},
		{"255.255.255.255", 40000, false},
		{"224.0.0.1", 40000, false},
		{"239.255.255.250", 40000, false},
		{"ff02::1", 40000, false},
		{"ff0e::1", 40000, false},
	} {
		if got := plausibleSource(netip.MustParseAddr(tc.addr), tc.port); got != tc.ok {
			t.Errorf("%s port %d: plausible %v, want %v", tc.addr, tc.port, got, tc.ok)
		}
	}
}
