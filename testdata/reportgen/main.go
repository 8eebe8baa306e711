// Command reportgen plays a large map's probe agents for testdata/bench/
// large.sh: every interval, each of -edges edges reports fresh round-trip
// times to -targets of the blocks in -blocks, signed with a key it creates
// through the admin API. Each edge measures the same targets every round,
// with new values, so each map interval rebuilds from new data, as a
// production map does, and the map keeps its size.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/edgemap/edgemap/probe"
)

func main() {
	api := flag.String("api", "http://127.0.0.1:8120", "the server's admin API")
	blocksFile := flag.String("blocks", "", "target blocks, one per line (benchgen -blocks)")
	edges := flag.Int("edges", 20, "edges that report (e0000 up)")
	targets := flag.Int("targets", 2000, "targets in each report")
	every := flag.Duration("every", 10*time.Second, "how often each edge reports")
	duration := flag.Duration("duration", time.Minute, "how long to report")
	flag.Parse()
	blocks, err := readBlocks(*blocksFile)
	if err != nil {
		log.Fatal(err)
	}
	type agent struct {
		id      string
		secret  []byte
		targets []netip.Prefix
	}
	agents := make([]agent, *edges)
	for i := range agents {
		edge := fmt.Sprintf("e%04d", i)
		var key struct{ ID, Secret string }
		if err := call(*api+"/v1/keys", map[string]string{"id": edge + "-reportgen", "edge": edge}, &key); err != nil {
			log.Fatalf("key for %s: %v", edge, err)
		}
		secret, err := probe.DecodeSecret(key.Secret)
		if err != nil {
			log.Fatal(err)
		}
		agents[i] = agent{id: key.ID, secret: secret}
	}
	// large.sh starts its load once this is logged: a key's creation
	// is a configuration change, not the reports under test.
	log.Printf("%d keys made; reporting", len(agents))
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	// Each agent measures the same targets every round, as a real one
	// does: drawn anew each round, the map would gain 40 000 measurements
	// every 10 s and triple over ten minutes.
	for i := range agents {
		// Distinct targets: a partial shuffle of the blocks.
		for j := range min(*targets, len(blocks)) {
			k := j + rnd.IntN(len(blocks)-j)
			blocks[j], blocks[k] = blocks[k], blocks[j]
		}
		agents[i].targets = slices.Clone(blocks[:min(*targets, len(blocks))])
	}
	end := time.Now().Add(*duration)
	sent := 0
	for seq := uint64(1); time.Now().Before(end); seq++ {
		round := time.Now()
		for i, a := range agents {
			r := probe.Report{Edge: fmt.Sprintf("e%04d", i), MeasuredAt: time.Now().UTC(), IntervalMs: every.Milliseconds()}
			for _, t := range a.targets {
				r.Measurements = append(r.Measurements, probe.Measurement{Target: t, RTTMs: 5 + 200*rnd.Float64(), Samples: 3})
			}
			if err := report(*api, a.id, a.secret, seq, &r); err != nil {
				log.Printf("report of %s: %v", r.Edge, err)
				continue
			}
			sent++
		}
		time.Sleep(time.Until(round.Add(*every)))
	}
	log.Printf("%d reports of %d measurements sent", sent, *targets)
}

func readBlocks(path string) ([]netip.Prefix, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.Prefix
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p, err := netip.ParsePrefix(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no blocks", path)
	}
	return out, sc.Err()
}

func call(url string, in, out any) error {
	body, _ := json.Marshal(in)
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func report(api, keyID string, secret []byte, seq uint64, r *probe.Report) error {
	body, _ := json.Marshal(r)
	req, err := http.NewRequest(http.MethodPost, api+"/v1/reports", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	probe.Sign(req, body, keyID, secret, time.Now(), seq)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
