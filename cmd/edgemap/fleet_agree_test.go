package main

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
)

// The fleet's agreement tests: three servers build the same map from the
// same configuration, reports and demand (see fleetlab_test.go).

// Capacity is the edge's: three servers each answer a third of the demand
// of eight Frankfurt units, 40 qps each, 120 in all, for fra1, whose
// capacity is 100. Alone, each would see 40 and keep every unit on fra1
// (120 qps to it); with the fleet's demand all three move the same units
// off it, and fra1 gets at most its capacity while lon1 has room.
func TestFleetCapacityIsTheEdges(t *testing.T) {
	l := newFleetLab(t, 3, "--demand-source-cap", "0")
	ns1 := l.nodes[0]
	const (
		units    = 8
		perNode  = 5.0 // qps per unit per server
		capacity = 100
	)
	var subnets []string
	var targets []config.TargetSpec
	for i := range units {
		block := fmt.Sprintf("198.18.2.%d/28", 16*i) // inside the test GeoIP database's Frankfurt /24
		subnets = append(subnets, block)
		targets = append(targets, config.TargetSpec{Block: block, Probe: fmt.Sprintf("198.18.2.%d:443", 16*i+1)})
	}
	w := config.WorldSpec{Targets: targets}
	if code := ns1.Call(t, http.MethodPost, "/v1/apply", w, nil); code != http.StatusOK {
		t.Fatalf("apply targets: %d", code)
	}
	if code := ns1.Call(t, http.MethodPatch, "/v1/edges/fra1", map[string]int{"capacity": capacity}, nil); code != http.StatusOK {
		t.Fatalf("fra1's capacity: %d", code)
	}
	l.converged(t, 2*time.Second)
	if fleet, local, c := units*perNode*float64(len(l.nodes)), units*perNode, float64(capacity); !(fleet > c && local < c) {
		t.Fatalf("the test is void: fleet demand %v, one server's %v, capacity %v", fleet, local, c)
	}

	// Each server gets perNode qps per unit, paced by a ticker (load, not
	// a wait for a condition), until the test has its answer.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, nd := range l.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Timeout: time.Second}
			tick := time.NewTicker(time.Duration(float64(time.Second) / (perNode * units)))
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				c.Exchange(ecsQuery(shop, subnets[i%units]), nd.DNS.String())
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	// The answers are read through explain while the load runs: DNS
	// queries would add to the demand being measured.
	answers := func(nd *fleetNode) []string {
		var out []string
		for _, sn := range subnets {
			var x mapping.Explanation
			nd.Call(t, http.MethodGet, "/v1/map/explain?property=shop.cdn.example.net&client="+strings.TrimSuffix(sn, "/28")+"&source_prefix=28", nil, &x)
			out = append(out, strings.Join(chosen(&x), ","))
		}
		return out
	}
	// A server's demand rate halves the distance to the true rate every
	// map interval (node.Demand): after six 1 s intervals, and one more
	// for the fleet's (the interval before's), the servers see at least
	// 97% of the 120 qps; 30 s for a loaded CI machine.
	fleetDemand := units * perNode * float64(len(l.nodes))
	var first []string
	edgetest.Eventually(t, 30*time.Second, "the servers assign fra1 the fleet's demand, within its capacity, alike", func() bool {
		first = answers(l.nodes[0])
		for _, nd := range l.nodes {
			assigned := nd.MetricSum(t, "edgemap_edge_assigned_qps")
			if nd.Metric(t, `edgemap_edge_assigned_qps{edge="fra1"}`) > capacity || assigned < 0.97*fleetDemand || !slices.Equal(answers(nd), first) {
				return false
			}
		}
		return true
	})
	for _, nd := range l.nodes {
		t.Logf("%s: fra1 assigned %.1f qps of %.1f in all", nd.id, nd.Metric(t, `edgemap_edge_assigned_qps{edge="fra1"}`), nd.MetricSum(t, "edgemap_edge_assigned_qps"))
		for i, sn := range subnets {
			if got := nd.answer(t, shop, sn); got != first[i] {
				t.Errorf("%s answers %s with %s, explain said %s", nd.id, sn, got, first[i])
			}
		}
	}
	onFra1 := 0
	for _, a := range first {
		if a == fra1Addr {
			onFra1++
		}
	}
	// What fra1 really gets: every server sends it the units it answers
	// with fra1, perNode qps each; the greedy fills it to within one
	// unit's demand of its capacity.
	load := float64(onFra1) * perNode * float64(len(l.nodes))
	if load > capacity || load < capacity-2*units*perNode {
		t.Fatalf("fra1 answers %d of %d units: %v qps against a capacity of %d (answers %v)", onFra1, units, load, capacity, first)
	}
	t.Logf("fra1 answers %d of %d units, %v qps of its %d; the rest go to %v", onFra1, units, load, capacity, first)
}

// ecsQuery is an A query for name with ECS subnet.
func ecsQuery(name, subnet string) *dns.Msg {
	p := netip.MustParsePrefix(subnet)
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1,
		SourceNetmask: uint8(p.Bits()), Address: p.Addr().AsSlice()})
	return m
}

// Same configuration and same reports: the three servers answer 1 000
// client networks alike, measured, by geography or by default order.
func TestFleetServersAgree(t *testing.T) {
	l := newFleetLab(t, 3)
	ns1 := l.nodes[0]
	const networks = 1000
	var subnets []string
	w := config.WorldSpec{}
	for i := range networks {
		// /25s of 198.18.0.0/15; the first of each /24 is a target.
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(i>>9), byte(i >> 1), byte(i&1) * 128}), 25)
		subnets = append(subnets, block.String())
		if i%2 == 0 {
			w.Targets = append(w.Targets, config.TargetSpec{Block: block.String(), Probe: netip.AddrPortFrom(block.Addr().Next(), 443).String()})
		}
	}
	if code := ns1.Call(t, http.MethodPost, "/v1/apply", w, nil); code != http.StatusOK {
		t.Fatalf("apply targets: %d", code)
	}
	l.converged(t, 2*time.Second)
	// Three edges measure every target, with RTTs that differ by target;
	// each report goes to every server, as an agent sends it.
	now := time.Now().UTC()
	for e, edge := range []string{"fra1", "lon1", "iad1"} {
		secret := addKey(t, ns1.srv(), edge+"-agent", edge)
		rep := &probe.Report{Edge: edge, MeasuredAt: now, IntervalMs: 30000}
		for i, tgt := range w.Targets {
			rtt := float64(5 + (i*7+e*13)%40)
			rep.Measurements = append(rep.Measurements, probe.Measurement{Target: netip.MustParsePrefix(tgt.Block), RTTMs: rtt, Samples: 3})
		}
		for _, nd := range l.nodes {
			// The key is the fleet's: it may take a moment to reach nd.
			edgetest.Eventually(t, 2*time.Second, nd.id+" accepts "+edge+"'s report", func() bool {
				body, h := edgetest.SignReport(t, rep, edge+"-agent", secret, uint64(time.Now().UnixNano()))
				code, _ := postReport(t, nd.srv(), body, h)
				return code == http.StatusOK
			})
		}
	}
	l.builtAfter(t, time.Now(), 10*time.Second)
	probeUnit := subnets[0]
	for _, nd := range l.nodes {
		edgetest.Eventually(t, 5*time.Second, nd.id+" decides by the measurements", func() bool {
			var x mapping.Explanation
			nd.Call(t, http.MethodGet, "/v1/map/explain?property=shop.cdn.example.net&client="+strings.TrimSuffix(probeUnit, "/25")+"&source_prefix=25", nil, &x)
			return x.Basis == mapping.BasisMeasured
		})
	}
	type answer struct {
		addrs []string
		scope uint8
	}
	ask := func(nd *fleetNode, name, subnet string) answer {
		r, addrs := nd.AskA(t, name, subnet)
		a := answer{addrs: addrs}
		for _, o := range r.IsEdns0().Option {
			if ecs, ok := o.(*dns.EDNS0_SUBNET); ok {
				a.scope = ecs.SourceScope
			}
		}
		return a
	}
	measured, differ := 0, 0
	for _, name := range []string{shop, "video.cdn.example.net."} {
		for i, sn := range subnets {
			want := ask(l.nodes[0], name, sn)
			if i%2 == 0 && len(want.addrs) > 0 && want.addrs[0] != fra1Addr {
				measured++
			}
			for _, nd := range l.nodes[1:] {
				if got := ask(nd, name, sn); !slices.Equal(got.addrs, want.addrs) || got.scope != want.scope {
					differ++
					t.Errorf("%s %s: ns1 answers %v /%d, %s %v /%d", name, sn, want.addrs, want.scope, nd.id, got.addrs, got.scope)
				}
			}
		}
	}
	if measured == 0 {
		t.Fatal("no answer was decided by the measurements: the test compares nothing measured")
	}
	t.Logf("%d networks x 2 names x 3 servers: %d differences", networks, differ)
}
