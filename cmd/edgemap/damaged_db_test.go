package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/edgetest"
	"github.com/edgemap/edgemap/store"
	"github.com/edgemap/edgemap/store/storetest"
)

// realDatabase writes what a server that ran a while holds: the demo world
// plus 300 edges, 200 targets and 3 000 measurements, through the store's
// API. It returns the path and bbolt's type of each page.
func realDatabase(t *testing.T) (string, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "good.db")
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := config.ReadWorld(edgetest.World)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		w.Edges = append(w.Edges, config.EdgeSpec{ID: fmt.Sprintf("x%03d", i), IPv4: edgetest.Ptr(fmt.Sprintf("198.51.100.%d", 1+i%250)),
			Lat: edgetest.Ptr(float64(i%170) - 85), Lon: edgetest.Ptr(float64(i%360) - 180), Pool: edgetest.Ptr("global"), Capacity: edgetest.Ptr(1000 + i)})
	}
	for i := range 200 {
		w.Targets = append(w.Targets, config.TargetSpec{Block: fmt.Sprintf("198.19.%d.0/24", i), Probe: fmt.Sprintf("198.19.%d.10:443", i)})
	}
	if _, err := st.Update(func(c *store.Config) error { return w.ApplyTo(c, false) }); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for seq := range uint64(6) {
		var ms []store.Measurement
		for i := range 500 {
			ms = append(ms, store.Measurement{Edge: fmt.Sprintf("x%03d", (int(seq)*500+i)%300),
				Target: netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", i%200)), RTTMs: float64(1 + i%90), Samples: 3, At: now})
		}
		if err := st.Record("agent", seq+1, ms, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path, storetest.PageTypes(t, path)
}

// TestServeRefusesDamagedDatabase starts the real `edgemap serve` binary
// on copies of a real database with 512 random bytes over the start of a
// meta page, the free list, a branch page and leaf pages of each bucket
// that has them. Each start must either serve answers or exit with a clear
// error that names the file and says what to do, never a Go panic; a file
// it refused must be left byte for byte as it was.
func TestServeRefusesDamagedDatabase(t *testing.T) {
	bin := edgemapBinary(t)
	goodPath, types := realDatabase(t)
	good, err := os.ReadFile(goodPath)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "db", "check", goodPath).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "edges 310") || !strings.HasSuffix(string(out), "ok\n") {
		t.Fatalf("db check of the good file: %v\n%s", err, out)
	}
	// The first page of each type, and up to three leaf pages spread over
	// the file (the buckets' data).
	var pages []int
	first := map[string]bool{}
	var leaves []int
	for id, typ := range types {
		if !first[typ] {
			first[typ] = true
			pages = append(pages, id)
		}
		if typ == "leaf" {
			leaves = append(leaves, id)
		}
	}
	for i := 1; i <= 3 && len(leaves) > 0; i++ {
		pages = append(pages, leaves[i*(len(leaves)-1)/3])
	}
	for _, typ := range []string{"meta", "freelist", "branch", "leaf"} {
		if !first[typ] {
			t.Fatalf("the database has no %s page to damage (types %v)", typ, types)
		}
	}
	const pageSize = 4096
	for _, id := range pages {
		t.Run(fmt.Sprintf("page%d-%s", id, types[id]), func(t *testing.T) {
			bad := bytes.Clone(good)
			r := rand.New(rand.NewPCG(uint64(id), 512))
			for i := range 512 {
				bad[id*pageSize+i] = byte(r.Uint32())
			}
			path := filepath.Join(t.TempDir(), "edgemap.db")
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			served, stderr := startOrRefuse(t, bin, path)
			t.Logf("served %v:\n%s", served, stderr)
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatalf("a Go panic on stderr:\n%s", stderr)
			}
			if served {
				if types[id] != "meta" && types[id] != "free" {
					t.Errorf("served from a file with page %d (%s) destroyed", id, types[id])
				}
				return
			}
			for _, want := range []string{path, "database is damaged", "left unchanged", "backup", "edgemap db check"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("the refusal does not say %q:\n%s", want, stderr)
				}
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, bad) {
				t.Error("serve changed the file it refused")
			}
			// db check finds the same damage.
			out, err := exec.Command(bin, "db", "check", path).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "damaged:") || strings.Contains(string(out), "panic") {
				t.Errorf("db check of the damaged file: %v\n%s", err, out)
			}
		})
	}
}

// startOrRefuse runs `edgemap serve` on the database. If it comes up, it
// must answer a query; it is then stopped. It returns whether it served
// and what it wrote to stderr.
func startOrRefuse(t *testing.T, bin, db string) (bool, string) {
	t.Helper()
	// 30 s to start or refuse: a busy CI machine is slow to exec and build
	// the first map, and a healthy start takes well under a second.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--db", db, "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
		"--max-age", "24h", "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	served := false
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		all.WriteString(line + "\n")
		var rec struct {
			Msg string `json:"msg"`
			DNS string `json:"dns"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "serving" {
			continue
		}
		served = true
		m := new(dns.Msg)
		m.SetQuestion("shop.cdn.example.net.", dns.TypeA)
		if r, _, err := new(dns.Client).Exchange(m, rec.DNS); err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			t.Errorf("served, but the query failed: %v %v", r, err)
		}
		cmd.Process.Signal(os.Interrupt)
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("serve neither started nor refused within 30 s:\n%s", all.String())
	}
	if served && err != nil {
		t.Errorf("serve exited with %v after a clean stop:\n%s", err, all.String())
	}
	if !served && err == nil {
		t.Errorf("serve exited 0 without serving:\n%s", all.String())
	}
	return served, all.String()
}
