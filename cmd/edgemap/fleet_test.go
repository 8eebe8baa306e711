package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/fleet/fleettest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
)

// The fleet's end-to-end tests: three `edgemap serve` processes and a real
// etcd (see fleetlab_test.go).

const (
	shop = "shop.cdn.example.net."
	// frankfurtNet is a Frankfurt network of the test GeoIP database: fra1
	// (192.0.2.1) answers it, lon1 (192.0.2.2) once fra1 is drained.
	frankfurtNet = "198.18.2.0/24"
	fra1Addr     = "192.0.2.1"
)

// A write through one server is answered by the other two within 1 s,
// with the same serial, and `node list` shows the three at the revision.
func TestFleetWriteAnsweredByEveryServer(t *testing.T) {
	l := newFleetLab(t, 3)
	ns1 := l.nodes[0]
	before := l.converged(t, 5*time.Second)
	if got := l.nodes[2].answer(t, shop, frankfurtNet); got != fra1Addr {
		t.Fatalf("ns3 answers Frankfurt with %s before the drain, want fra1", got)
	}
	if code := ns1.Call(t, http.MethodPost, "/v1/edges/fra1/drain", nil, nil); code != http.StatusOK {
		t.Fatalf("drain on ns1: %d", code)
	}
	written := time.Now()
	after := ns1.serial(t)
	if after <= before {
		t.Fatalf("ns1's serial %d after the write, %d before", after, before)
	}
	// The bound: every other server publishes within 1 s.
	var wg sync.WaitGroup
	for _, nd := range l.nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			edgetest.Eventually(t, time.Second, nd.id+" answers the drain with ns1's serial", func() bool {
				return nd.answer(t, shop, frankfurtNet) != fra1Addr && nd.serial(t) == after
			})
			t.Logf("%s: %v after the write returned", nd.id, time.Since(written).Round(time.Millisecond))
		}()
	}
	wg.Wait()
	// Each server's event log has the drain: ns1's with the client that
	// asked, the others' as applied from etcd at the same revision.
	lastConfig := func(nd *fleetNode) node.Event {
		var p eventsPage
		if code := nd.Call(t, http.MethodGet, "/v1/events?limit=1000", nil, &p); code != http.StatusOK {
			t.Fatalf("%s: GET /v1/events: %d", nd.id, code)
		}
		for i := len(p.Events) - 1; i >= 0; i-- {
			if p.Events[i].Kind == node.EventConfig {
				return p.Events[i]
			}
		}
		t.Fatalf("%s: no configuration event in %+v", nd.id, p.Events)
		return node.Event{}
	}
	drained := func(e node.Event) bool {
		return len(e.Changes) == 1 && e.Changes[0].Kind == "edge" && e.Changes[0].Key == "fra1" && len(e.Changes[0].Fields) == 1 &&
			e.Changes[0].Fields[0].Field == "draining" && string(e.Changes[0].Fields[0].New) == "true" && e.Serial == after
	}
	own := lastConfig(ns1)
	if !drained(own) || own.Client == nil || own.Revision == 0 {
		t.Fatalf("ns1's event of its drain: %+v", own)
	}
	for _, nd := range l.nodes[1:] {
		edgetest.Eventually(t, 5*time.Second, nd.id+" logs the drain it applied", func() bool {
			e := lastConfig(nd)
			return drained(e) && e.Client == nil && e.Revision == own.Revision &&
				e.Message == fmt.Sprintf("edge fra1 changed (draining false -> true) by another server of the fleet, applied from etcd revision %d", own.Revision)
		})
	}
	var nodes config.Nodes
	edgetest.Eventually(t, 5*time.Second, "node list shows the three at the revision", func() bool {
		nodes = config.Nodes{} // Unmarshal would keep fields the answer omits
		if code := l.nodes[2].Call(t, http.MethodGet, "/v1/nodes", nil, &nodes); code != http.StatusOK {
			t.Fatalf("GET /v1/nodes: %d", code)
		}
		if len(nodes.Nodes) != 3 {
			return false
		}
		for _, n := range nodes.Nodes {
			if n.Serial != after || n.Behind || n.API == "" || n.DNS == "" {
				return false
			}
		}
		return true
	})
	out, err := l.nodes[1].run(t, "node", "list")
	if err != nil || !strings.Contains(out, "ns1") || !strings.Contains(out, "ns3") || !strings.Contains(out, "(answered)") {
		t.Fatalf("node list: %v\n%s", err, out)
	}
	t.Logf("node list:\n%s", out)

	// A server that dies (no clean stop: its registration is not
	// withdrawn) leaves the list when its lease ends: --etcd-lease-ttl 2s,
	// etcd's expiry sweep and the watch; 10 s for a loaded machine.
	ns3 := l.nodes[2]
	ns3.cmd.Process.Kill()
	<-ns3.exited
	died := time.Now()
	edgetest.Eventually(t, 10*time.Second, "ns3 leaves the list", func() bool {
		nodes = config.Nodes{}
		ns1.Call(t, http.MethodGet, "/v1/nodes", nil, &nodes)
		return len(nodes.Nodes) == 2
	})
	t.Logf("ns3 left the list %v after it died", time.Since(died).Round(time.Millisecond))
}

// srv is the server as the single-server tests' helpers take it.
func (nd *fleetNode) srv() *server { return &server{Addrs: nd.Addrs} }

// One key, made once through one server, is valid on all three; an agent
// given one collector finds the other two (GET /v1/nodes), reports to
// each, and each builds its map from the measurements.
func TestFleetOneKeyEveryCollector(t *testing.T) {
	l := newFleetLab(t, 3)
	ns1, ns2 := l.nodes[0], l.nodes[1]
	for _, b := range seededTargets {
		if code := ns1.Call(t, http.MethodDelete, "/v1/map/targets?block="+b, nil, nil); code != http.StatusOK {
			t.Fatalf("delete target %s: %d", b, code)
		}
	}
	frankfurt := edgetest.Listener(t, "127.1.2.10") // the test GeoIP database places 127.1.2.0/24 in Frankfurt
	if code := ns1.Call(t, http.MethodPost, "/v1/map/targets", config.TargetSpec{Block: "127.1.2.0/24", Probe: frankfurt}, nil); code != http.StatusCreated {
		t.Fatalf("add target: %d", code)
	}
	// The key is made through ns2 and the agent given ns1 only.
	cmd := exec.Command(l.bin, "--api", ns2.API, "key", "add", "--id", "fra1-agent", "--edge", "fra1")
	secret, err := cmd.Output()
	if err != nil {
		t.Fatalf("key add: %v", err)
	}
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(l.bin, "probe", "--edge", "fra1", "--collector", ns1.API, "--key-id", "fra1-agent",
		"--secret-file", secretFile, "--interval", "500ms", "--timeout", "200ms", "--log-format", "json")
	agentLog := &syncWriter{}
	agent.Stderr = agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agent.Process.Signal(os.Interrupt)
		agent.Wait()
	})
	for _, nd := range l.nodes {
		// Reports every 0.5 s, a map every 1 s, discovery in the agent's
		// first rounds: 10 s for a loaded CI machine.
		edgetest.Eventually(t, 10*time.Second, nd.id+" builds its map from the agent's measurements", func() bool {
			x := explainFor(t, nd.srv(), "shop.cdn.example.net", "127.1.2.9")
			return strings.HasPrefix(x.Unit, "127.1.2.0/24") && slices.Equal(measuredEdges(x), []string{"fra1"})
		})
	}
	var nodes config.Nodes
	edgetest.Eventually(t, 5*time.Second, "every server counts the agent's reports", func() bool {
		nodes = config.Nodes{}
		ns2.Call(t, http.MethodGet, "/v1/nodes", nil, &nodes)
		for _, n := range nodes.Nodes {
			if n.Reports == 0 {
				return false
			}
		}
		return len(nodes.Nodes) == 3
	})
	// The servers it discovered, by id: a lease that lapses on a loaded
	// machine may make it drop and find one again, which is not a second
	// collector.
	out := agentLog.String()
	found := map[string]bool{}
	for _, m := range regexp.MustCompile(`reporting to a collector discovered in the fleet.*"node": ?"([^"]+)"`).FindAllStringSubmatch(out, -1) {
		found[m[1]] = true
	}
	if len(found) != 2 || !found["ns2"] || !found["ns3"] {
		t.Fatalf("the agent discovered %v, want ns2 and ns3:\n%s", found, out)
	}
}

// syncWriter is an io.Writer safe for a child's output and a test's reads.
type syncWriter struct {
	mu sync.Mutex // guards w
	w  strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// With etcd stopped, every server answers as before (a restarted one
// too, from its file), writes are refused with 503 saying why, and
// /healthz says degraded with the revision served; when etcd is back the
// servers are current again within 2 s and writes go through.
func TestFleetWithoutEtcd(t *testing.T) {
	l := newFleetLab(t, 3)
	ns2, ns3 := l.nodes[1], l.nodes[2]
	serial := l.converged(t, 5*time.Second)
	l.stopEtcd()
	for _, nd := range l.nodes {
		edgetest.Eventually(t, 5*time.Second, nd.id+" says it is degraded", func() bool {
			h := nd.healthz(t)
			f, _ := h["fleet"].(map[string]any)
			return h["status"] == "degraded" && f != nil && f["revision"] == float64(serial) && strings.HasPrefix(fmt.Sprint(f["etcd"]), "unreachable")
		})
		if got := nd.answer(t, shop, frankfurtNet); got != fra1Addr || nd.serial(t) != serial {
			t.Fatalf("%s without etcd answers %s serial %d, want fra1 serial %d", nd.id, got, nd.serial(t), serial)
		}
		if up := nd.Metric(t, "edgemap_fleet_etcd_up"); up != 0 {
			t.Fatalf("%s: edgemap_fleet_etcd_up %v", nd.id, up)
		}
	}
	code, raw := ns2.CallRaw(t, http.MethodPost, "/v1/edges/fra1/drain", nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(raw), "etcd") || !strings.Contains(string(raw), "keeps answering") {
		t.Fatalf("a write without etcd: %d %s; want 503 saying etcd is unreachable and answers go on", code, raw)
	}
	if out, err := ns2.run(t, "edge", "drain", "--id", "fra1"); err == nil || !strings.Contains(out, "etcd") {
		t.Fatalf("the CLI's write without etcd: %v\n%s", err, out)
	}
	// A server restarted while etcd is down answers from its file at once.
	ns3.stop(t)
	ns3.start(t)
	if got := ns3.answer(t, shop, frankfurtNet); got != fra1Addr || ns3.serial(t) != serial {
		t.Fatalf("ns3 restarted without etcd answers %s serial %d, want fra1 serial %d", got, ns3.serial(t), serial)
	}

	l.restartEtcd()
	back := time.Now()
	for _, nd := range l.nodes {
		// README: current within 2 s of etcd's return; 4 s for CI.
		edgetest.Eventually(t, 4*time.Second, nd.id+" healthy again", func() bool { return nd.healthz(t)["status"] == "ok" })
	}
	t.Logf("all healthy %v after etcd's return", time.Since(back).Round(time.Millisecond))
	if code := ns3.Call(t, http.MethodPost, "/v1/edges/fra1/drain", nil, nil); code != http.StatusOK {
		t.Fatalf("a write after etcd's return: %d", code)
	}
	after := ns3.serial(t)
	for _, nd := range l.nodes {
		edgetest.Eventually(t, 2*time.Second, nd.id+" answers the write", func() bool {
			return nd.serial(t) == after && nd.answer(t, shop, frankfurtNet) != fra1Addr
		})
	}
}

// A server stopped while two changes are made answers from its file as
// soon as it is started again, and catches up from its revision.
func TestFleetRestartedServerCatchesUp(t *testing.T) {
	l := newFleetLab(t, 3)
	ns1, ns3 := l.nodes[0], l.nodes[2]
	old := l.converged(t, 5*time.Second)
	ns3.stop(t)
	for _, path := range []string{"/v1/edges/fra1/drain", "/v1/edges/lon1/drain"} {
		if code := ns1.Call(t, http.MethodPost, path, nil, nil); code != http.StatusOK {
			t.Fatalf("POST %s: %d", path, code)
		}
	}
	latest := ns1.serial(t)
	ns3.start(t)
	started := time.Now()
	// It answers at once; whether from its file or already caught up
	// depends on the race with its first read of etcd, which the log
	// settles below.
	if r, _ := ns3.AskA(t, shop, frankfurtNet); r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Fatalf("ns3's first answer after its start: %v", r)
	}
	edgetest.Eventually(t, 2*time.Second, "ns3 catches up", func() bool { return ns3.serial(t) == latest })
	t.Logf("ns3 caught up %v after serving", time.Since(started).Round(time.Millisecond))
	if got := ns3.answer(t, shop, frankfurtNet); got == fra1Addr || got == "192.0.2.2" {
		t.Fatalf("ns3 answers Frankfurt with %s; fra1 and lon1 are drained", got)
	}
	// Its first map was its file's (serial old), then it copied the
	// change from etcd: the revision is the serial (the fleet was new).
	if !ns3.logged("configuration copied from etcd", fmt.Sprintf("from_revision=%d", old), fmt.Sprintf("revision=%d", latest)) {
		t.Fatalf("ns3 did not log catching up from revision %d to %d:\n%s", old, latest, ns3.logText())
	}
}

// Two applies of different worlds through two servers at once: one
// commits first and the other is made again on top of it (or refused with
// 409); every server ends with one world whole, never a mixture.
func TestFleetConcurrentApplies(t *testing.T) {
	l := newFleetLab(t, 3)
	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	variant := func(capacity int, ttl uint32) config.WorldSpec {
		v := *w
		v.Edges = slices.Clone(w.Edges)
		for i := range v.Edges {
			v.Edges[i].Capacity = edgetest.Ptr(capacity)
		}
		v.Properties = slices.Clone(w.Properties)
		for i := range v.Properties {
			v.Properties[i].TTL = edgetest.Ptr(ttl)
		}
		return v
	}
	for round := range 5 {
		worlds := []config.WorldSpec{variant(1000+round, 30), variant(2000+round, 40)}
		codes := make([]int, 2)
		var wg sync.WaitGroup
		for i := range worlds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i] = l.nodes[i].Call(t, http.MethodPost, "/v1/apply?prune=true", worlds[i], nil)
			}()
		}
		wg.Wait()
		for i, c := range codes {
			if c != http.StatusOK && c != http.StatusConflict {
				t.Fatalf("round %d: apply through ns%d: %d", round, i+1, c)
			}
		}
		t.Logf("round %d: ns1 %d, ns2 %d", round, codes[0], codes[1])
		l.converged(t, 2*time.Second)
		var first config.Edge
		for _, nd := range l.nodes {
			var edges []config.Edge
			var props []config.Property
			nd.Call(t, http.MethodGet, "/v1/edges", nil, &edges)
			nd.Call(t, http.MethodGet, "/v1/properties", nil, &props)
			if first.ID == "" {
				first = edges[0]
			}
			want := map[int]uint32{1000 + round: 30, 2000 + round: 40}[first.Capacity]
			if want == 0 {
				t.Fatalf("round %d: %s has capacity %d, from neither world", round, nd.id, first.Capacity)
			}
			for _, e := range edges {
				if e.Capacity != first.Capacity {
					t.Fatalf("round %d: %s mixes the worlds: %s capacity %d, %s %d", round, nd.id, first.ID, first.Capacity, e.ID, e.Capacity)
				}
			}
			for _, p := range props {
				if p.TTL != want {
					t.Fatalf("round %d: %s mixes the worlds: capacity %d with TTL %d", round, nd.id, first.Capacity, p.TTL)
				}
			}
		}
	}
}

// A fleet whose etcd takes TLS clients with certificates only, as a
// production etcd does: the servers connect with --etcd-cacert,
// --etcd-cert and --etcd-key; one without a client certificate is refused
// by etcd and says so, and answers nothing it was not given.
func TestFleetOverTLS(t *testing.T) {
	etcd, files := fleettest.StartTLS(t)
	l := &fleetLab{t: t, bin: edgemapBinary(t), etcd: etcd,
		etcdFlags: []string{"--etcd-endpoints", etcd.Endpoint(), "--etcd-cacert", files.CA, "--etcd-cert", files.Cert, "--etcd-key", files.Key}}
	l.startNodes(t, 2)
	if h := l.nodes[1].healthz(t); h["status"] != "ok" {
		t.Fatalf("ns2 over TLS: %v", h)
	}
	l.etcdFlags = []string{"--etcd-endpoints", etcd.Endpoint(), "--etcd-cacert", files.CA}
	stranger := &fleetNode{lab: l, id: "ns9", db: filepath.Join(t.TempDir(), "ns9.db"), dnsAt: freeAddr(t, "127.0.0.19"), apiAt: freeAddr(t, "127.0.0.19")}
	stranger.start(t)
	edgetest.Eventually(t, 5*time.Second, "the server without a client certificate says etcd refuses it", func() bool {
		f, _ := stranger.healthz(t)["fleet"].(map[string]any)
		return f != nil && strings.Contains(fmt.Sprint(f["etcd"]), "unreachable")
	})
	if s := stranger.serial(t); s != 0 {
		t.Fatalf("the server without a certificate answers serial %d, the fleet's configuration it cannot have read", s)
	}
}
