package node

import (
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/probe"
	"github.com/edgemap/edgemap/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testOptions are a node's options over a new store in t.TempDir(), with
// the test GeoIP database and a map interval no test waits for.
func testOptions(t *testing.T) Options {
	t.Helper()
	return Options{Store: testStore(t), GeoIP: edgetest.GeoIP, MapInterval: time.Hour, MaxAge: mapping.DefaultMaxAge,
		Retention: time.Hour, Stability: mapping.DefaultStability}
}

// startNode makes a node with opts, seeded with the demo world, and closes
// it when the test ends.
func startNode(t *testing.T, opts Options) *Node {
	t.Helper()
	n, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Seed(w); err != nil {
		t.Fatal(err)
	}
	return n
}

// answer is the published map's first edge for property from client.
func answer(n *Node, property, client string) string {
	name := n.Snapshot().Load().Lookup(property)
	if name == nil || name.Property == nil {
		return "no property " + property
	}
	var d mapping.Decision
	name.Property.Decide(netip.MustParseAddr(client), false, &d)
	if d.N == 0 {
		return "none"
	}
	return d.Edges[0].ID
}

const frankfurt = "198.18.2.9" // fra1's client in the test GeoIP database

// edgeOf is the edge id of c, or the zero edge.
func edgeOf(c store.Config, id string) store.Edge {
	for _, e := range c.Edges {
		if e.ID == id {
			return e
		}
	}
	return store.Edge{}
}

// Update returns once the map that holds the change is published.
func TestUpdatePublishesBeforeReturning(t *testing.T) {
	n := startNode(t, testOptions(t))
	if got := answer(n, "shop.cdn.example.net.", frankfurt); got != "fra1" {
		t.Fatalf("Frankfurt before: %s, want fra1", got)
	}
	changed, err := n.Update(func(c *store.Config) error {
		_, err := config.DrainEdge(c, "fra1", true)
		return err
	})
	if err != nil || !changed {
		t.Fatalf("drain: %v %v", changed, err)
	}
	if got := answer(n, "shop.cdn.example.net.", frankfurt); got != "lon1" {
		t.Fatalf("Frankfurt right after the drain returned: %s, want lon1", got)
	}
	// A change the whole configuration refuses is not committed.
	if _, err := n.Update(func(c *store.Config) error { return config.DeleteEdge(c, "sin1") }); err != nil {
		t.Fatal(err)
	}
	_, err = n.Update(func(c *store.Config) error {
		c.Edges = c.Edges[:0]
		return nil
	})
	var fe *mapping.FieldError
	if !errors.As(err, &fe) || fe.Field != "property.pools" {
		t.Fatalf("removing every edge: %v, want a FieldError on property.pools", err)
	}
	if c, _, _ := n.Config(); len(c.Edges) == 0 {
		t.Fatal("a refused change was committed")
	}
}

// slowCommits is a ConfigStore whose commits wait until release is
// closed: a large apply's bbolt write, as long as a test needs it.
type slowCommits struct {
	*store.Store
	entered chan struct{} // gets one value per commit that starts
	release chan struct{}
}

func (s *slowCommits) CommitConfig(rev uint64, c store.Config) (uint64, bool, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.Store.CommitConfig(rev, c)
}

// While an admin write is being committed, an agent's report that its edge
// is down publishes a map without it at once: the write holds nothing a
// health rebuild needs. (The write used to hold the node's lock across its
// bbolt commit and two builds.)
func TestWriteDoesNotBlockAHealthRebuild(t *testing.T) {
	opts := testOptions(t)
	slow := &slowCommits{Store: opts.Store, entered: make(chan struct{}, 1), release: make(chan struct{})}
	n := startNode(t, opts) // seeded through the store itself
	n.source = slow
	key := store.Key{ID: "fra1-agent", Edge: "fra1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	if err := opts.Store.AddKey(key); err != nil {
		t.Fatal(err)
	}

	updated := make(chan error, 1)
	go func() {
		_, err := n.Update(func(c *store.Config) error {
			_, err := config.PutEdge(c, config.EdgeSpec{ID: "iad1", Capacity: edgetest.Ptr(777)}, false)
			return err
		})
		updated <- err
	}()
	<-slow.entered // the write is committing, and stays so until release
	down := false
	rep := &probe.Report{Edge: "fra1", MeasuredAt: time.Now().UTC(), IntervalMs: 1000, EdgeUp: &down}
	if _, err := n.Collector().Accept(key.ID, 1, rep); err != nil {
		t.Fatal(err)
	}
	// 5 s: a build of the demo map takes milliseconds; the bound is for a
	// slow, shared machine.
	took := edgetest.Eventually(t, 5*time.Second, "fra1 out of the answers while the write commits", func() bool {
		return answer(n, "shop.cdn.example.net.", frankfurt) == "lon1"
	})
	select {
	case err := <-updated:
		t.Fatalf("the write returned (%v) before it was released: the test proves nothing", err)
	default:
	}
	t.Logf("fra1 left the answers %v after its agent said so, with a write in progress", took)
	close(slow.release)
	if err := <-updated; err != nil {
		t.Fatal(err)
	}
	c, _, _ := n.Config()
	snap := n.Snapshot().Load()
	if e := edgeOf(c, "iad1"); e.Capacity != 777 || !snap.HasEdge("iad1") || answer(n, "shop.cdn.example.net.", frankfurt) != "lon1" {
		t.Fatalf("after the write: %+v, Frankfurt %s; want the write in and fra1 still down", e, answer(n, "shop.cdn.example.net.", frankfurt))
	}
}

// A health transition takes effect with the map that uses it: while the
// map cannot be built, it is neither persisted nor forgotten, and the next
// map that builds publishes and persists it.
func TestHealthPersistedAfterPublish(t *testing.T) {
	opts := testOptions(t)
	n := startNode(t, opts)
	// A configuration no map can be built from, written behind the node's
	// back (every write through it is checked).
	var good store.Config
	if _, err := opts.Store.Update(func(c *store.Config) error {
		good = c.Clone()
		c.Properties[0].Pools = []string{"nowhere"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	n.health.reported("fra1", false, time.Now(), time.Second)
	if err := n.wait(n.request(work{config: mustPrepare(t, n)})); err == nil {
		t.Fatal("a map was built from a configuration with a pool of no edges")
	}
	persisted, _ := opts.Store.Health()
	if _, ok := persisted["fra1"]; ok || answer(n, "shop.cdn.example.net.", frankfurt) != "fra1" {
		t.Fatalf("a transition took effect without its map: persisted %+v", persisted)
	}
	if _, err := opts.Store.Update(func(c *store.Config) error { *c = good; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := n.wait(n.request(work{config: mustPrepare(t, n)})); err != nil {
		t.Fatal(err)
	}
	if got := answer(n, "shop.cdn.example.net.", frankfurt); got != "lon1" {
		t.Fatalf("after a map was built: Frankfurt %s; want lon1, fra1 down by its agent", got)
	}
	// Persisted beside the builder, at once: 5 s for a slow machine.
	edgetest.Eventually(t, 5*time.Second, "fra1's health persisted", func() bool {
		persisted, _ = opts.Store.Health()
		h, ok := persisted["fra1"]
		return ok && !h.Up && h.Source == string(mapping.HealthAgent)
	})
}

// racingCommits commits another write just before the first commit it is
// given, as a second node or API request would.
type racingCommits struct {
	*store.Store
	raced atomic.Bool
}

func (s *racingCommits) CommitConfig(rev uint64, c store.Config) (uint64, bool, error) {
	if s.raced.CompareAndSwap(false, true) {
		if _, err := s.Store.Update(func(c *store.Config) error {
			_, err := config.DrainEdge(c, "lon1", true)
			return err
		}); err != nil {
			return 0, false, err
		}
	}
	return s.Store.CommitConfig(rev, c)
}

// A write that loses a race is made again on top of the one that won: both
// are in, neither overwrote the other.
func TestUpdateMadeAgainAfterAConflict(t *testing.T) {
	opts := testOptions(t)
	n := startNode(t, opts)
	n.source = &racingCommits{Store: opts.Store}
	runs := 0
	if _, err := n.Update(func(c *store.Config) error {
		runs++
		_, err := config.DrainEdge(c, "fra1", true)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c, _, _ := n.Config()
	if runs != 2 || !edgeOf(c, "fra1").Draining || !edgeOf(c, "lon1").Draining {
		t.Fatalf("after the race: %d runs, %+v; want fn run twice and both edges draining", runs, c.Edges)
	}
	if got := answer(n, "shop.cdn.example.net.", frankfurt); got == "fra1" || got == "lon1" {
		t.Fatalf("Frankfurt: %s, want neither drained edge", got)
	}
}

// Close stops the map loop, the builder and the check loops and waits for
// them: nothing of the node runs once it returns.
func TestCloseJoinsEveryGoroutine(t *testing.T) {
	opts := testOptions(t)
	opts.MapInterval = 10 * time.Millisecond
	opts.Checks = probe.MonitorConfig{Interval: 10 * time.Millisecond, Timeout: time.Second, DownAfter: 1, UpAfter: 1}
	target := edgetest.Listener(t, "127.0.0.1")
	n := startNode(t, opts)
	if _, err := n.Update(func(c *store.Config) error {
		_, err := config.PutEdge(c, config.EdgeSpec{ID: "fra1", Check: edgetest.Ptr("tcp://" + target)}, false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- n.Run(t.Context()) }()
	// A map interval passed: the map loop runs (its interval builds, or
	// finds nothing changed).
	intervals := func() float64 { return testutil.ToFloat64(n.metrics.builds) + testutil.ToFloat64(n.metrics.unchanged) }
	before := intervals()
	edgetest.Eventually(t, 5*time.Second, "the map loop running", func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "internal/node.(*Node).Run(") && intervals() > before
	})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// A joined goroutine's frame can outlive Close by the few instructions
	// after its last signal (a deferred Done, a closed channel), runnable;
	// one that was not joined still waits on its ticker, a channel or a
	// lock.
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "[running]") || strings.Contains(header, "[runnable]") {
			continue
		}
		for _, frame := range []string{"internal/node.(*builder).run", "internal/node.(*persister).run", "internal/node.(*Node).Run", "probe.(*Monitor).run"} {
			if strings.Contains(g, frame) {
				t.Errorf("%s still waits after Close: %s", frame, header)
			}
		}
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if _, err := n.Update(func(*store.Config) error { return nil }); err != nil {
		t.Errorf("an unchanged write after Close: %v", err)
	}
	if _, err := n.Update(func(c *store.Config) error { c.Edges[0].Capacity++; return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("a write after Close: %v, want ErrClosed", err)
	}
}

func mustPrepare(t *testing.T, n *Node) *prepared {
	t.Helper()
	p, err := n.prepare()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
