package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/mapping"
)

func rcodeOf(t *testing.T, s *server, name, subnet string) (int, []string) {
	t.Helper()
	r, addrs := s.AskA(t, name, subnet)
	return r.Rcode, addrs
}

func TestAllEdgesDownStillAnswers(t *testing.T) {
	s := startServer(t, demoConfig(t))
	dead := "tcp://" + edgetest.ClosedPort(t)
	for _, id := range []string{"nrt1", "sel1", "sin1"} { // the whole apac pool
		if code := s.Call(t, "PATCH", "/v1/edges/"+id, config.EdgeSpec{Check: edgetest.Ptr(dead)}, nil); code != http.StatusOK {
			t.Fatalf("set check on %s: %d", id, code)
		}
	}
	apac := map[string]bool{"192.0.2.8": true, "192.0.2.9": true, "192.0.2.10": true}
	// down-after 3 x 200 ms in the test config.
	edgetest.Eventually(t, 3*time.Second, "apac edges down", func() bool {
		return s.Metric(t, `edgemap_edges{state="down"}`) == 3
	})
	// shop may use global edges too: Seoul moves off its dead apac edges.
	if rc, got := rcodeOf(t, s, "shop.cdn.example.net.", "198.18.1.0/24"); rc != dns.RcodeSuccess || len(got) != 1 || apac[got[0]] {
		t.Fatalf("shop from Seoul with apac down: rcode %d %v, want a global edge", rc, got)
	}
	// game has only apac edges: serve-best answers the best anyway.
	rc, got := rcodeOf(t, s, "game.cdn.example.net.", "198.18.1.0/24")
	if rc != dns.RcodeSuccess || len(got) != 1 || got[0] != "192.0.2.9" {
		t.Fatalf("game with every edge down (serve-best): rcode %d %v, want sel1 anyway", rc, got)
	}
	if v := s.Metric(t, "edgemap_dns_fail_open_answers_total"); v < 1 {
		t.Fatalf("fail-open answers not counted: %v", v)
	}
	// nodata fails closed.
	if code := s.Call(t, "PATCH", "/v1/properties/game.cdn.example.net", config.PropertySpec{AllDown: edgetest.Ptr(string(mapping.AllDownNoData))}, nil); code != http.StatusOK {
		t.Fatalf("set all-down nodata: %d", code)
	}
	if rc, got := rcodeOf(t, s, "game.cdn.example.net.", "198.18.1.0/24"); rc != dns.RcodeSuccess || len(got) != 0 {
		t.Fatalf("game with every edge down (nodata): rcode %d %v, want NODATA", rc, got)
	}
	// A check that passes again brings the edges back after up-after.
	for _, id := range []string{"nrt1", "sel1", "sin1"} {
		s.Call(t, "PATCH", "/v1/edges/"+id, config.EdgeSpec{Check: edgetest.Ptr("")}, nil)
	}
	up := edgetest.Listener(t, "127.0.0.1")
	for _, id := range []string{"nrt1", "sel1", "sin1"} {
		s.Call(t, "PATCH", "/v1/edges/"+id, config.EdgeSpec{Check: edgetest.Ptr("tcp://" + up)}, nil)
	}
	edgetest.Eventually(t, 3*time.Second, "apac back up", func() bool {
		_, got := rcodeOf(t, s, "game.cdn.example.net.", "198.18.1.0/24")
		return len(got) == 1 && got[0] == "192.0.2.9"
	})
}

func TestDrainedEdgeGetsNoAnswers(t *testing.T) {
	s := startServer(t, demoConfig(t))
	if _, got := rcodeOf(t, s, "shop.cdn.example.net.", "198.18.2.0/24"); len(got) != 1 || got[0] != "192.0.2.1" {
		t.Fatalf("Frankfurt before drain: %v", got)
	}
	if code := s.Call(t, "POST", "/v1/edges/fra1/drain", nil, nil); code != http.StatusOK {
		t.Fatalf("drain: %d", code)
	}
	if _, got := rcodeOf(t, s, "shop.cdn.example.net.", "198.18.2.0/24"); len(got) != 1 || got[0] != "192.0.2.2" {
		t.Fatalf("Frankfurt with fra1 draining: %v, want lon1", got)
	}
	// Draining survives an apply of a file that does not mention it.
	w, _ := config.ReadWorld(edgetest.World)
	s.Call(t, "POST", "/v1/apply", w, nil)
	if _, got := rcodeOf(t, s, "shop.cdn.example.net.", "198.18.2.0/24"); got[0] != "192.0.2.2" {
		t.Fatalf("apply undrained fra1: %v", got)
	}
	if code := s.Call(t, "POST", "/v1/edges/fra1/undrain", nil, nil); code != http.StatusOK {
		t.Fatalf("undrain: %d", code)
	}
	if _, got := rcodeOf(t, s, "shop.cdn.example.net.", "198.18.2.0/24"); got[0] != "192.0.2.1" {
		t.Fatalf("after undrain: %v, want fra1", got)
	}
}

// TestCapacitySpillsToNextBest queries from 40 Paris /24s at about 2 qps
// each. Paris's nearest edge is lon1, its next fra1. With lon1's capacity
// at 30 qps, lon1 must fill up to at most 30 qps and the rest go to fra1,
// each to its next-best edge. The rates a slow machine really sends vary,
// so the test waits for the outcome (with a generous deadline) instead of
// assuming a rate, and checks it against what the server measured.
func TestCapacitySpillsToNextBest(t *testing.T) {
	s := startServer(t, demoConfig(t))
	if code := s.Call(t, "PATCH", "/v1/edges/lon1", config.EdgeSpec{Capacity: edgetest.Ptr(30)}, nil); code != http.StatusOK {
		t.Fatalf("set capacity: %d", code)
	}
	const units, perUnitQPS = 40, 2
	unit := func(i int) string { return fmt.Sprintf("198.19.%d.0/24", i) }
	explain := func(u string) mapping.Explanation {
		var x mapping.Explanation
		s.Call(t, "GET", "/v1/map/explain?property=shop.cdn.example.net&client="+strings.TrimSuffix(u, "0/24")+"1", nil, &x)
		return x
	}
	tick := time.NewTicker(time.Second / perUnitQPS)
	defer tick.Stop()
	answers := map[string]string{}
	var load float64
	sawCapacity := false
	// Demand is smoothed over 1 s map intervals, so the spill shows after
	// a few seconds; 30 s leaves room for a machine busy with other work.
	deadline := time.Now().Add(30 * time.Second)
	for {
		<-tick.C
		onLon, onFra := 0, 0
		for i := range units {
			_, got := rcodeOf(t, s, "shop.cdn.example.net.", unit(i))
			answers[unit(i)] = got[0]
			switch got[0] {
			case "192.0.2.2":
				onLon++
			case "192.0.2.1":
				onFra++
			default:
				t.Fatalf("%s answered %s: overflow must go to the next-best edge (fra1)", unit(i), got[0])
			}
		}
		load = s.Metric(t, `edgemap_edge_assigned_qps{edge="lon1"}`)
		if load > 30 {
			t.Fatalf("lon1 assigned %v qps, over its capacity 30", load)
		}
		// The first units moved off lon1 are moved for capacity; later,
		// stability may keep them on fra1 when lon1 has a little room.
		for u, a := range answers {
			if a == "192.0.2.1" && !sawCapacity {
				if x := explain(u); x.Assignment != nil && x.Assignment.Reason == "capacity" {
					sawCapacity = true
				}
			}
		}
		if onLon > 0 && onFra > 0 && load > 0 && sawCapacity {
			t.Logf("lon1 %d units (%.1f qps assigned), fra1 %d units", onLon, load, onFra)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: lon1 %d units (%.1f qps assigned), fra1 %d, a capacity move explained: %v; want lon1 filled to its capacity and the rest on fra1",
				onLon, load, onFra, sawCapacity)
		}
	}
	// Every unit on fra1 is there because lon1 was full: explain names the
	// move, or stability keeping the unit where capacity put it.
	for u, a := range answers {
		if a != "192.0.2.1" {
			continue
		}
		x := explain(u)
		if x.Assignment == nil || x.Assignment.Best != "lon1" || (x.Assignment.Reason != "capacity" && x.Assignment.Reason != "stability") {
			t.Errorf("explain %s: assignment %+v, want moved off lon1 for capacity (or kept on fra1 for stability)", u, x.Assignment)
		}
	}
}

// An edge that went down by its check comes back when the check is
// removed: nothing is left to say it is down.
func TestRemovingACheckBringsTheEdgeBack(t *testing.T) {
	s := startServer(t, demoConfig(t))
	s.Call(t, "PATCH", "/v1/edges/fra1", config.EdgeSpec{Check: edgetest.Ptr("tcp://" + edgetest.ClosedPort(t))}, nil)
	edgetest.Eventually(t, 3*time.Second, "fra1 down", func() bool {
		_, got := rcodeOf(t, s, "shop.cdn.example.net.", "198.18.2.0/24")
		return got[0] != "192.0.2.1"
	})
	s.Call(t, "PATCH", "/v1/edges/fra1", config.EdgeSpec{Check: edgetest.Ptr("")}, nil)
	edgetest.Eventually(t, 3*time.Second, "fra1 back without a check", func() bool {
		_, got := rcodeOf(t, s, "shop.cdn.example.net.", "198.18.2.0/24")
		return got[0] == "192.0.2.1"
	})
}

// TestForgedECSDoesNotMoveClients floods a real server with forged ECS, as
// issue 11 found: one address (127.0.1.1, not a resolver) sends 10 times
// lon1's capacity for Paris's unit 198.19.1.0/24, while "real" resolvers
// (127.0.0.1) ask for that unit and another Paris unit, 198.19.2.0/24, at
// a few qps. Without the per-source cap the flood moves the unit's real
// clients off lon1 (the control, to show the test can see the harm); with
// it, neither unit moves.
func TestForgedECSDoesNotMoveClients(t *testing.T) {
	const capacity, flood = 20, 10 * 20 // qps
	const lon1, fra1 = "192.0.2.2", "192.0.2.1"
	victim, other := "198.19.1.0/24", "198.19.2.0/24"
	attacker, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.1.1")})
	if err != nil {
		t.Skipf("cannot send from 127.0.1.1: %v", err)
	}
	defer attacker.Close()
	forged := new(dns.Msg)
	forged.SetQuestion("shop.cdn.example.net.", dns.TypeA)
	forged.SetEdns0(1232, false)
	p := netip.MustParsePrefix(victim)
	forged.IsEdns0().Option = append(forged.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: p.Addr().AsSlice()})
	packet, err := forged.Pack()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		sourceCap float64
	}{{"without the cap", 0}, {"with the cap", node.DefaultDemandSourceCap}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := demoConfig(t)
			cfg.DemandSourceCap = tc.sourceCap
			s := startServer(t, cfg)
			if code := s.Call(t, "PATCH", "/v1/edges/lon1", config.EdgeSpec{Capacity: edgetest.Ptr(capacity)}, nil); code != http.StatusOK {
				t.Fatalf("set capacity: %d", code)
			}
			to := net.UDPAddrFromAddrPort(s.DNS)
			// Every 100 ms the flood's 20 forged queries; every 500 ms the
			// real resolver's query for each unit (2 qps each, well within
			// lon1's room and the cap), whose answers are checked.
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			var victimGot, otherGot []string
			builds := -1.0
			deadline := time.Now().Add(15 * time.Second)
			for round := 0; ; round++ {
				<-tick.C
				for range flood / 10 {
					attacker.WriteToUDP(packet, to)
				}
				if round%5 != 0 {
					continue
				}
				_, victimGot = rcodeOf(t, s, "shop.cdn.example.net.", victim)
				_, otherGot = rcodeOf(t, s, "shop.cdn.example.net.", other)
				if tc.sourceCap == 0 {
					// The control: the flood takes the unit off lon1.
					if victimGot[0] == fra1 {
						t.Logf("without the cap the flood moved %s's clients to fra1 after %d rounds", victim, round)
						return
					}
				} else if s.Metric(t, "edgemap_demand_capped_qps") > flood/2 {
					// The flood is seen and capped; from now on, three
					// more maps must leave both units on lon1.
					if builds < 0 {
						builds = s.Metric(t, "edgemap_map_builds_total")
					}
					if victimGot[0] != lon1 || otherGot[0] != lon1 {
						t.Fatalf("with the flood capped: %s answered %v, %s %v; want both on lon1", victim, victimGot, other, otherGot)
					}
					if s.Metric(t, "edgemap_map_builds_total") >= builds+3 {
						load := s.Metric(t, `edgemap_edge_assigned_qps{edge="lon1"}`)
						if load <= tc.sourceCap || load > capacity {
							t.Fatalf("lon1 assigned %v qps, want the capped flood and the real demand, within %d", load, capacity)
						}
						t.Logf("three maps with the flood capped: both units on lon1, %.1f qps assigned to it", load)
						return
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("after 15 s: %s answered %v, %s %v, capped %v qps", victim, victimGot, other, otherGot, s.Metric(t, "edgemap_demand_capped_qps"))
				}
			}
		})
	}
}

// TestFailoverDuringALargeApply: while an apply of a large world is being
// decoded, checked, committed and published, fra1's check fails and
// recovers again and again, and each time fra1 leaves (or rejoins) the
// answers within its bound (down-after x check-interval, then one map).
// The write used to hold the node's lock across its commit and two builds,
// so a health change in that time waited for the end of the apply.
func TestFailoverDuringALargeApply(t *testing.T) {
	cfg := demoConfig(t)
	cfg.CheckInterval, cfg.DownAfter = 50*time.Millisecond, 2
	s := startServer(t, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	edgetest.AcceptAndClose(t, ln)
	if code := s.Call(t, "PATCH", "/v1/edges/fra1", config.EdgeSpec{Check: edgetest.Ptr("tcp://" + addr)}, nil); code != http.StatusOK {
		t.Fatalf("set fra1's check: %d", code)
	}
	const frankfurt = "198.18.2.0/24"
	fra1 := func() bool {
		got := s.QueryA(t, "shop.cdn.example.net.", frankfurt)
		return len(got) == 1 && got[0] == "192.0.2.1"
	}
	edgetest.Eventually(t, 5*time.Second, "fra1 checked and answering", func() bool {
		return fra1() && s.Metric(t, `edgemap_edges{state="up"}`) == 10
	})

	// The demo world with 1 000 more edges and 100 000 targets: a 6 MB
	// body whose decoding, checks, commit and map take seconds.
	world, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	for i := range world.Edges {
		if world.Edges[i].ID == "fra1" {
			world.Edges[i].Check = edgetest.Ptr("tcp://" + addr) // as it is now
		}
	}
	for i := range 1000 {
		world.Edges = append(world.Edges, config.EdgeSpec{ID: fmt.Sprintf("bulk%04d", i), IPv4: edgetest.Ptr(fmt.Sprintf("198.51.100.%d", 1+i%250)),
			Lat: edgetest.Ptr(float64(i%170) - 85), Lon: edgetest.Ptr(float64(i%360) - 180), Pool: edgetest.Ptr("bulk")})
	}
	for i := range 100000 {
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 12), byte(i >> 4), byte(i << 4)}), 28)
		world.Targets = append(world.Targets, config.TargetSpec{Block: block.String(), Probe: block.Addr().Next().String() + ":443"})
	}
	applied := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(applied)
		var res config.ApplyResult
		if code, raw := s.CallRaw(t, "POST", "/v1/apply", world); code != http.StatusOK || json.Unmarshal(raw, &res) != nil || !res.Changed {
			t.Errorf("the large apply: %d %.200s", code, raw)
		}
	}()
	// The bound of README "Health, failover and capacity": 2 x 50 ms of
	// checks and a map (1 s); 3 s more for a slow, shared machine. The
	// old lock held a change for the whole apply: 9 s.
	const bound = 2*50*time.Millisecond + time.Second + 3*time.Second
	var worst time.Duration
	rounds := 0
	// measure waits for a change of fra1's answers and counts how long it
	// took if the apply was still running when it came.
	measure := func(what string, answered bool) (running bool) {
		took := edgetest.Eventually(t, 30*time.Second, what, func() bool { return fra1() == answered })
		select {
		case <-applied:
			return false // the apply may have ended first: not counted
		default:
			rounds++
			worst = max(worst, took)
			return true
		}
	}
	for running := true; running; {
		ln.Close() // fra1's check fails from now on
		running = measure("fra1 out of Frankfurt's answers", false)
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Fatal(err)
		}
		edgetest.AcceptAndClose(t, ln)
		running = measure("fra1 back in Frankfurt's answers", true) && running
	}
	t.Logf("%d health changes during an apply of %v: the slowest published in %v (bound %v)", rounds,
		time.Since(start).Round(time.Millisecond), worst.Round(time.Millisecond), bound)
	if worst > bound {
		t.Errorf("during the apply a change of fra1's health took up to %v to reach the answers, more than the bound %v", worst, bound)
	}
	if rounds < 4 {
		t.Errorf("only %d health changes during the apply: make the world larger, or the test proves little", rounds)
	}
}
