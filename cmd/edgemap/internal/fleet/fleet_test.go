package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/fleet/fleettest"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

// The fleet tests run real name server nodes (node.New over a bbolt file
// in t.TempDir()) whose configuration store is a Fleet over a real etcd
// (fleettest: the embedded etcd server, in the test process).

// propagation bounds how long another server may take to publish a
// change: 1 s, as README promises, doubled for a loaded CI machine under
// the race detector.
const propagation = 2 * time.Second

type member struct {
	f    *Fleet
	n    *node.Node
	st   *store.Store
	path string
}

// join starts a server of the fleet at endpoint, on the file at path
// (created if missing), and stops it when the test ends.
func join(t testing.TB, endpoint, id, path string) *member {
	t.Helper()
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := zap.NewNop()
	if _, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(t).Named(id)
	}
	f, err := Open(Options{Endpoints: []string{endpoint}, Store: st, MapInterval: time.Hour, LeaseTTL: 2 * time.Second,
		ID: id, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(node.Options{Store: st, Config: f, Keys: f, Demand: f, GeoIP: edgetest.GeoIP,
		MapInterval: time.Hour, MaxAge: mapping.DefaultMaxAge, Retention: time.Hour, Stability: mapping.DefaultStability})
	if err != nil {
		t.Fatal(err)
	}
	f.Start(n)
	f.Register(Member{DNS: "127.0.0.1:53", API: "http://" + id})
	m := &member{f: f, n: n, st: st, path: path}
	t.Cleanup(m.stop)
	return m
}

func (m *member) stop() {
	m.n.Close()
	m.f.Close()
	m.st.Close()
}

func newFile(t testing.TB) string { return filepath.Join(t.TempDir(), "edgemap.db") }

// seed applies the demo world through m.
func seed(t testing.TB, m *member) {
	t.Helper()
	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.n.Seed(w); err != nil {
		t.Fatal(err)
	}
}

// serial is the serial of the map m publishes (0 without a zone).
func serial(m *member) uint32 {
	if z := m.n.Snapshot().Load().Zone(); z != nil {
		return z.Serial
	}
	return 0
}

func firstEdge(m *member, property, client string) string {
	p := m.n.Snapshot().Load().Lookup(property)
	if p == nil || p.Property == nil {
		return "no property"
	}
	var d mapping.Decision
	p.Property.Decide(netip.MustParseAddr(client), false, &d)
	if d.N == 0 {
		return "none"
	}
	return d.Edges[0].ID
}

func drain(t *testing.T, m *member, edge string, on bool) {
	t.Helper()
	if _, err := m.n.Update(func(c *store.Config) error { _, err := config.DrainEdge(c, edge, on); return err }); err != nil {
		t.Fatal(err)
	}
}

const frankfurt = "198.18.2.9" // fra1's client in the test GeoIP database

// A change committed through one server is published by the other with
// the same serial, and both files hold it at the same revision.
func TestWriteOnOneServerIsPublishedByTheOther(t *testing.T) {
	etcd := fleettest.Start(t)
	a := join(t, etcd.Endpoint(), "ns1", newFile(t))
	b := join(t, etcd.Endpoint(), "ns2", newFile(t))
	seed(t, a)
	edgetest.Eventually(t, propagation, "ns2 publishes the seeded world", func() bool { return serial(b) == serial(a) && serial(a) != 0 })
	if got := firstEdge(b, "shop.cdn.example.net.", frankfurt); got != "fra1" {
		t.Fatalf("ns2 answers Frankfurt with %s, want fra1", got)
	}
	before := serial(a)
	drain(t, a, "fra1", true)
	if serial(a) <= before {
		t.Fatalf("serial %d after a change, was %d", serial(a), before)
	}
	took := edgetest.Eventually(t, propagation, "ns2 publishes the drain", func() bool { return firstEdge(b, "shop.cdn.example.net.", frankfurt) != "fra1" })
	t.Logf("published by the other server %v after the write returned", took)
	if serial(b) != serial(a) {
		t.Fatalf("serials differ: ns1 %d, ns2 %d", serial(a), serial(b))
	}
	ca, ra, _ := a.st.ConfigAt()
	cb, rb, _ := b.st.ConfigAt()
	if ra != rb || !edgetest.EqualJSON(ca, cb) {
		t.Fatalf("files differ: ns1 at %d, ns2 at %d", ra, rb)
	}
	// The world's static records and the zone's timers travel too.
	if len(cb.Records) != len(ca.Records) || len(cb.Records) == 0 || cb.Zone.Refresh != ca.Zone.Refresh {
		t.Fatalf("ns2 holds %d static records (ns1 %d), refresh %d", len(cb.Records), len(ca.Records), cb.Zone.Refresh)
	}
}

// Two writes made at the same revision: one commits, the other gets
// store.ErrConflict and its server's copy has caught up with the winner,
// so that the write made again lands on top of it.
func TestConcurrentCommitsOneWins(t *testing.T) {
	etcd := fleettest.Start(t)
	a := join(t, etcd.Endpoint(), "ns1", newFile(t))
	b := join(t, etcd.Endpoint(), "ns2", newFile(t))
	seed(t, a)
	edgetest.Eventually(t, propagation, "ns2 has the world", func() bool { return serial(b) == serial(a) })
	ca, ra, _ := a.f.ConfigAt()
	cb, rb, _ := b.f.ConfigAt()
	if ra != rb {
		t.Fatalf("revisions differ before the race: %d, %d", ra, rb)
	}
	ca.Edges[0].Capacity, cb.Edges[0].Capacity = 111, 222
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, w := range []struct {
		m *member
		c store.Config
	}{{a, ca}, {b, cb}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = w.m.f.CommitConfig(ra, w.c)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrConflict):
			t.Fatalf("a commit failed otherwise: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d commits won (errors %v), want exactly 1", won, errs)
	}
	for _, m := range []*member{a, b} {
		c, rev, _ := m.f.ConfigAt()
		if rev == ra || (c.Edges[0].Capacity != 111 && c.Edges[0].Capacity != 222) {
			t.Fatalf("after the race a copy is at %d with capacity %d", rev, c.Edges[0].Capacity)
		}
	}
	// The loser's Update, made again, commits on top of the winner.
	if _, err := b.n.Update(func(c *store.Config) error { c.Edges[1].Capacity = 333; return nil }); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, propagation, "ns1 has both", func() bool {
		c, _, _ := a.f.ConfigAt()
		return c.Edges[1].Capacity == 333 && (c.Edges[0].Capacity == 111 || c.Edges[0].Capacity == 222)
	})
}

// etcd refuses a request of more than 1.5 MiB and a transaction of more
// than 128 operations by default; a configuration of 40 000 targets (2.6
// MB of JSON, 2 MB as blobs) is committed through a stock etcd all the same, and a
// change of one target rewrites one blob.
func TestLargeConfigurationWithinEtcdDefaults(t *testing.T) {
	etcd := fleettest.Start(t)
	a := join(t, etcd.Endpoint(), "ns1", newFile(t))
	b := join(t, etcd.Endpoint(), "ns2", newFile(t))
	seed(t, a)
	before, _, _ := a.f.ConfigAt()
	targets := len(before.Targets) + 40000
	if _, err := a.n.Update(func(c *store.Config) error {
		for i := range 40000 {
			block := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
			c.Targets = append(c.Targets, store.Target{Block: block, Probe: netip.AddrPortFrom(block.Addr().Next(), 80)})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cli := etcd.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, DefaultPrefix+dirBlobs, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	total, largest := 0, 0
	for _, kv := range resp.Kvs {
		total += len(kv.Value)
		largest = max(largest, len(kv.Value))
	}
	if total < 3<<19 || largest > 256<<10 {
		t.Fatalf("blobs: %d bytes in all, the largest %d; want over 1.5 MiB in blobs of at most 256 KiB", total, largest)
	}
	// A slow build of 40 000 targets under the race detector: 60 s.
	edgetest.Eventually(t, 60*time.Second, "ns2 has the targets", func() bool {
		c, _, _ := b.f.ConfigAt()
		return len(c.Targets) == targets
	})
	blobsBefore := blobKeys(t, cli)
	if _, err := a.n.Update(func(c *store.Config) error { c.Targets = c.Targets[1:]; return nil }); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, 60*time.Second, "ns2 has one target less", func() bool {
		c, _, _ := b.f.ConfigAt()
		return len(c.Targets) == targets-1
	})
	edgetest.Eventually(t, propagation, "the replaced blob is collected", func() bool {
		after := blobKeys(t, cli)
		added := 0
		for k := range after {
			if !blobsBefore[k] {
				added++
			}
		}
		return added == 1 && len(after) == len(blobsBefore)
	})
}

func blobKeys(t *testing.T, cli *clientv3.Client) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, DefaultPrefix+dirBlobs, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = true
	}
	return out
}

// A server cut off from etcd while changes are made and etcd compacts its
// history past the server's revision catches up when it is back: its
// watch cannot resume, so it reads the configuration whole.
func TestCatchesUpAfterCompaction(t *testing.T) {
	etcd := fleettest.Start(t)
	proxy := fleettest.NewProxy(t, strings.TrimPrefix(etcd.Endpoint(), "http://"))
	a := join(t, etcd.Endpoint(), "ns1", newFile(t))
	b := join(t, proxy.URL(), "ns2", newFile(t))
	seed(t, a)
	edgetest.Eventually(t, propagation, "ns2 has the world", func() bool { return serial(b) == serial(a) })
	proxy.Cut()
	edgetest.Eventually(t, 10*time.Second, "ns2 sees etcd unreachable", func() bool { return b.f.Health().Degraded })
	if _, err := b.n.Update(func(c *store.Config) error { c.Edges[0].Capacity = 5; return nil }); !errors.Is(err, node.ErrConfigUnavailable) {
		t.Fatalf("a write while cut off: %v, want ErrConfigUnavailable", err)
	} else if !strings.Contains(err.Error(), "keeps answering") {
		t.Fatalf("the refusal does not say what goes on: %v", err)
	}
	drain(t, a, "fra1", true)
	drain(t, a, "lon1", true)
	etcd.Compact(t)
	if got := firstEdge(b, "shop.cdn.example.net.", frankfurt); got != "fra1" {
		t.Fatalf("ns2 answered %s while cut off, want fra1 still", got)
	}
	proxy.Restore()
	// Within 2 s of etcd's return (README), doubled for CI.
	took := edgetest.Eventually(t, 4*time.Second, "ns2 catches up", func() bool { return serial(b) == serial(a) })
	t.Logf("caught up %v after the partition ended", took)
	c, _, _ := b.f.ConfigAt()
	if e := edgeByID(c, "lon1"); !e.Draining {
		t.Fatal("ns2's copy lacks the second change")
	}
	edgetest.Eventually(t, propagation, "ns2 healthy again", func() bool { return !b.f.Health().Degraded })
}

func edgeByID(c store.Config, id string) store.Edge {
	for _, e := range c.Edges {
		if e.ID == id {
			return e
		}
	}
	return store.Edge{}
}

// A key made through one server is valid on every one: each copies it
// into its file, where the collector reads it; removed, it goes from all.
func TestKeysAreTheFleets(t *testing.T) {
	etcd := fleettest.Start(t)
	a := join(t, etcd.Endpoint(), "ns1", newFile(t))
	b := join(t, etcd.Endpoint(), "ns2", newFile(t))
	k := store.Key{ID: "fra1-agent", Edge: "fra1", Secret: []byte("0123456789abcdef0123456789abcdef"), Created: time.Unix(1700000000, 0).UTC()}
	if err := a.n.Keys().AddKey(k); err != nil {
		t.Fatal(err)
	}
	if got, err := a.st.Key(k.ID); err != nil || string(got.Secret) != string(k.Secret) {
		t.Fatalf("ns1's file right after AddKey: %+v, %v", got, err)
	}
	if err := b.n.Keys().AddKey(k); !errors.Is(err, store.ErrExists) {
		t.Fatalf("the same key through ns2: %v, want ErrExists", err)
	}
	edgetest.Eventually(t, propagation, "ns2 accepts the key", func() bool {
		_, ok := b.n.Collector().Key(k.ID)
		return ok
	})
	if err := b.n.Keys().DeleteKey(k.ID); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, propagation, "ns1 refuses the key", func() bool {
		_, ok := a.n.Collector().Key(k.ID)
		return !ok
	})
	if err := a.n.Keys().DeleteKey(k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting it again: %v, want ErrNotFound", err)
	}
}

// The first server of a fleet, started on a single server's file, writes
// that configuration, its probe keys and its cookie secret to the empty
// etcd; its serial does not go back.
func TestFirstServerSeedsTheFleet(t *testing.T) {
	path := newFile(t)
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // three changes: serial 3
		if _, err := st.Update(func(c *store.Config) error { return w.ApplyTo(c, false) }); err != nil {
			t.Fatal(err)
		}
		w.Edges[0].Capacity = edgetest.Ptr(*w.Edges[0].Capacity + 1)
	}
	c, _ := st.Config()
	single := c.Zone.Serial
	key := store.Key{ID: "fra1-agent", Edge: "fra1", Secret: []byte("0123456789abcdef0123456789abcdef"), Created: time.Unix(1700000000, 0).UTC()}
	if err := st.AddKey(key); err != nil {
		t.Fatal(err)
	}
	cookie, err := st.CookieSecret()
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	etcd := fleettest.Start(t)
	a := join(t, etcd.Endpoint(), "ns1", path)
	// Its serial in the fleet is the revision plus its serial before.
	edgetest.Eventually(t, propagation, "the fleet is seeded and ns1 publishes it", func() bool {
		_, rev, _ := a.f.ConfigAt()
		return rev > 0 && serial(a) == single+uint32(rev)
	})
	b := join(t, etcd.Endpoint(), "ns2", newFile(t))
	edgetest.Eventually(t, propagation, "ns2 has the seeded configuration", func() bool { return serial(b) == serial(a) })
	cb, _, _ := b.f.ConfigAt()
	if len(cb.Edges) != len(c.Edges) {
		t.Fatalf("ns2 has %d edges, the file had %d", len(cb.Edges), len(c.Edges))
	}
	// The file's probe key and cookie secret are the fleet's too.
	if _, ok := b.n.Collector().Key(key.ID); !ok {
		t.Fatal("ns2 refuses the key the single server had")
	}
	if s, err := b.f.CookieSecret(); err != nil || s != cookie {
		t.Fatalf("ns2's cookie secret %x (%v), the single server's %x", s, err, cookie)
	}
}

// Every server of a fleet has the same DNS cookie secret.
func TestCookieSecretIsTheFleets(t *testing.T) {
	etcd := fleettest.Start(t)
	a := join(t, etcd.Endpoint(), "ns1", newFile(t))
	b := join(t, etcd.Endpoint(), "ns2", newFile(t))
	sa, err := a.f.CookieSecret()
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.f.CookieSecret()
	if err != nil {
		t.Fatal(err)
	}
	if sa != sb {
		t.Fatalf("cookie secrets differ: %x, %x", sa, sb)
	}
}

// Each server builds with the fleet's demand: every server's record of
// the interval before, added in the same order, so that both get the same
// numbers.
func TestDemandIsTheFleets(t *testing.T) {
	etcd := fleettest.Start(t)
	a := join(t, etcd.Endpoint(), "ns1", newFile(t))
	b := join(t, etcd.Endpoint(), "ns2", newFile(t))
	unit := netip.MustParsePrefix("198.18.2.0/24")
	other := netip.MustParsePrefix("198.18.3.0/24")
	at := time.Unix(1700000000, 0)
	r0 := a.f.round(at)
	next := at.Add(time.Hour)
	a.f.Share(at, []mapping.Demand{{Property: "shop.cdn.example.net.", Unit: unit, QPS: 0.1}})
	b.f.Share(at, []mapping.Demand{{Property: "shop.cdn.example.net.", Unit: unit, QPS: 0.2}, {Property: "shop.cdn.example.net.", Unit: other, QPS: 7}})
	// Both records must reach the other server before the next round.
	edgetest.Eventually(t, propagation, "each has the other's demand", func() bool {
		for _, m := range []*member{a, b} {
			m.f.mu.Lock()
			n := len(m.f.demand)
			m.f.mu.Unlock()
			if n != 2 {
				return false
			}
		}
		return true
	})
	if a.f.round(next) != r0+1 {
		t.Fatalf("rounds: %d then %d", r0, a.f.round(next))
	}
	ta := a.f.Share(next, nil)
	tb := b.f.Share(next, nil)
	if !edgetest.EqualJSON(ta, tb) {
		t.Fatalf("the servers build with different demand:\n%v\n%v", ta, tb)
	}
	qa, qb := 0.1, 0.2 // added at run time: 0.30000000000000004
	want := fmt.Sprint([]mapping.Demand{{Property: "shop.cdn.example.net.", Unit: unit, QPS: qa + qb}, {Property: "shop.cdn.example.net.", Unit: other, QPS: 7}})
	if got := fmt.Sprint(ta); got != want {
		t.Fatalf("fleet demand %s, want %s", got, want)
	}
}
