package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Agent defaults.
const (
	DefaultInterval    = 30 * time.Second
	DefaultSamples     = 3
	DefaultTimeout     = 2 * time.Second
	DefaultConcurrency = 256 // 10 000 targets x 3 samples finish well within 30 s
	DefaultQueue       = 32  // reports kept per collector while it is unreachable: 16 min at 30 s
	maxBackoff         = 30 * time.Second
	// AuthFailuresToStop is how many times in a row every collector must
	// refuse the agent's key (401) before Run gives up with
	// ErrUnauthorized. A wrong key ID or secret never fixes itself, and
	// the agent reads its secret file only when it starts: exiting makes
	// the mistake visible (systemd marks the unit failed and restarts it,
	// which reads a rotated secret), where retrying would warn forever.
	// One collector that refuses while another accepts (a key not yet
	// added there) only shows in that collector's metrics.
	AuthFailuresToStop = 5
	// SilentIntervals is how many of its intervals an agent may go without
	// a collector accepting a report before Health calls it unhealthy
	// (and a name server stops counting its word on its edge's health).
	SilentIntervals = 3
	// MaxCollectors is how many name servers an agent reports to, given
	// and discovered together: a fleet is a handful, and each collector is
	// a goroutine and a queue of reports.
	MaxCollectors = 64
)

// ErrUnauthorized is returned by Run when every collector refused the
// agent's key AuthFailuresToStop times in a row.
var ErrUnauthorized = errors.New("every collector refuses this agent's key")

// AgentConfig configures an Agent.
type AgentConfig struct {
	Edge       string
	Collectors []string // base URLs, e.g. http://ns1:8053
	KeyID      string
	Secret     []byte
	// Interval between measurement rounds; default DefaultInterval.
	Interval time.Duration
	// Samples is TCP connects per target per round; default DefaultSamples.
	Samples int
	// Timeout bounds one connect; a connect that takes longer is lost.
	Timeout time.Duration
	// Concurrency bounds connects in flight, so thousands of targets fit in
	// one interval without exhausting file descriptors.
	Concurrency int
	// Queue is how many reports wait per collector; when full the oldest is
	// dropped and counted.
	Queue int
	// TargetsFile, if set, is read each round instead of asking the
	// collectors (the JSON of GET /v1/targets).
	TargetsFile string
	// Source, if valid, is the local address connects are made from.
	Source netip.Addr
	// Check, if set, is run against the agent's own edge every round and
	// reported as EdgeUp; two failed rounds in a row report it down.
	Check *Check
	// Discover makes the agent report to every name server of its
	// collectors' fleet too, as GET /v1/nodes lists them (discover.go).
	Discover bool
	Log      *zap.Logger
	HTTP     *http.Client
}

// Agent measures the targets from beside one edge and reports to every
// collector. A slow or dead collector never delays the others: each has
// its own bounded queue and sender.
type Agent struct {
	cfg AgentConfig
	log *zap.Logger
	seq atomic.Uint64

	smu     sync.Mutex // guards senders, running and wg's Add
	senders []*sender  // the collectors given first, then those discovered
	running context.Context
	wg      sync.WaitGroup

	mu      sync.Mutex // guards targets
	targets []Target

	checkFails int // consecutive failed checks; used by round only

	started   time.Time
	rounds    atomic.Uint64
	measured  atomic.Int64  // targets measured in the last round
	roundTime atomic.Int64  // the last round's duration, ns
	edgeUp    atomic.Int32  // the last check: 1 up, 0 down, -1 no check yet
	refused   chan struct{} // closed when every collector refuses the key
	refuse    sync.Once
}

// AgentStats is what an agent did per collector: reports delivered,
// rejected (a 4xx that retrying cannot fix) and dropped from a full
// queue, reports waiting, when a report was last accepted, how many
// requests in a row it refused the key (401), and its last error.
type AgentStats struct {
	Collector               string
	Sent, Rejected, Dropped uint64
	Queued                  int
	LastAccepted            time.Time // zero: none yet
	AuthFailures            int
	LastError               string
}

// NewAgent checks cfg and fills in defaults.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	switch {
	case cfg.Edge == "":
		return nil, errors.New("--edge is required")
	case len(cfg.Collectors) == 0:
		return nil, errors.New("at least one --collector is required")
	case cfg.KeyID == "" || len(cfg.Secret) == 0:
		return nil, errors.New("--key-id and --secret-file are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Samples <= 0 {
		cfg.Samples = DefaultSamples
	}
	if cfg.Samples > MaxSamples {
		return nil, fmt.Errorf("--samples %d: at most %d", cfg.Samples, MaxSamples)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	a := &Agent{cfg: cfg, log: cfg.Log, started: time.Now(), refused: make(chan struct{})}
	a.edgeUp.Store(-1)
	for _, c := range cfg.Collectors {
		if !strings.HasPrefix(c, "http://") && !strings.HasPrefix(c, "https://") {
			return nil, fmt.Errorf("--collector %q: want http://host:port or https://...", c)
		}
		a.senders = append(a.senders, &sender{a: a, base: strings.TrimRight(c, "/"), wake: make(chan struct{}, 1)})
	}
	return a, nil
}

// Stats returns per-collector counters.
func (a *Agent) Stats() []AgentStats {
	out := []AgentStats{}
	for _, s := range a.active() {
		st := AgentStats{Collector: s.base, Sent: s.sent.Load(), Rejected: s.rejected.Load(), Dropped: s.dropped.Load(),
			AuthFailures: int(s.authFails.Load())}
		if ns := s.lastOK.Load(); ns != 0 {
			st.LastAccepted = time.Unix(0, ns)
		}
		s.mu.Lock()
		st.Queued, st.LastError = len(s.queue), s.lastErr
		s.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// RoundStats is what the agent's measurement rounds did: how many, the
// targets and the time of the last one, and its own edge's check (Up nil
// without --check or before the first).
type RoundStats struct {
	Rounds   uint64
	Targets  int
	Duration time.Duration
	EdgeUp   *bool
}

// Rounds returns the rounds' counters.
func (a *Agent) Rounds() RoundStats {
	r := RoundStats{Rounds: a.rounds.Load(), Targets: int(a.measured.Load()), Duration: time.Duration(a.roundTime.Load())}
	if v := a.edgeUp.Load(); v >= 0 {
		up := v == 1
		r.EdgeUp = &up
	}
	return r
}

// Health says whether the agent is doing its job at now: "" when some
// collector accepted a report within SilentIntervals intervals (or the
// agent is younger than that), else why not; degraded names the
// collectors that did not, while another did.
func (a *Agent) Health(now time.Time) (unhealthy string, degraded []string) {
	silent := SilentIntervals * a.cfg.Interval
	var reasons []string
	ok := 0
	for _, st := range a.Stats() {
		if (st.LastAccepted.IsZero() && now.Sub(a.started) <= silent) || now.Sub(st.LastAccepted) <= silent {
			ok++
			continue
		}
		why := st.LastError
		if why == "" {
			why = "nothing to report yet (no targets?)"
		}
		last := "never"
		if !st.LastAccepted.IsZero() {
			last = st.LastAccepted.UTC().Format(time.RFC3339)
		}
		reasons = append(reasons, fmt.Sprintf("%s: no report accepted since %s: %s", st.Collector, last, why))
	}
	if ok == 0 {
		return strings.Join(reasons, "; "), nil
	}
	return "", reasons
}

// Run measures every interval until ctx is done (then it returns nil), or
// until every collector has refused the agent's key AuthFailuresToStop
// times in a row (then ErrUnauthorized, with the collectors' words).
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	a.smu.Lock()
	a.running = ctx
	for _, s := range a.senders {
		a.start(s)
	}
	a.smu.Unlock()
	defer a.wg.Wait()
	defer cancel() // before the Wait above: the senders stop with ctx
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		a.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-a.refused:
			var why []string
			for _, st := range a.Stats() {
				why = append(why, st.Collector+": "+st.LastError)
			}
			return fmt.Errorf("%w (key %s, %d times in a row each): %s; check --key-id and --secret-file against `edgemap key list` on the name servers",
				ErrUnauthorized, a.cfg.KeyID, AuthFailuresToStop, strings.Join(why, "; "))
		case <-t.C:
		}
	}
}

// noteAuth counts a collector's refusal of the key (401) or its
// acceptance of a request, and tells Run when every collector refuses.
func (a *Agent) noteAuth(s *sender, refused bool) {
	if !refused {
		s.authFails.Store(0)
		return
	}
	s.authFails.Add(1)
	for _, o := range a.active() {
		if o.authFails.Load() < AuthFailuresToStop {
			return
		}
	}
	a.refuse.Do(func() { close(a.refused) })
}

func (a *Agent) round(ctx context.Context) {
	targets, err := a.loadTargets(ctx)
	if err != nil {
		a.log.Warn("no target list; measuring the last one known", zap.Error(err))
	}
	if len(targets) == 0 {
		return
	}
	a.discover(ctx)
	start := time.Now()
	r := &Report{Edge: a.cfg.Edge, IntervalMs: a.cfg.Interval.Milliseconds(), Measurements: a.measure(ctx, targets)}
	if a.cfg.Check != nil {
		if err := a.cfg.Check.Run(ctx, a.cfg.Timeout); err != nil {
			a.checkFails++
			a.log.Warn("edge check failed", zap.String("check", a.cfg.Check.String()), zap.Error(err))
		} else {
			a.checkFails = 0
		}
		up := a.checkFails < 2
		r.EdgeUp = &up
		a.edgeUp.Store(map[bool]int32{true: 1, false: 0}[up])
	}
	r.MeasuredAt = time.Now().UTC()
	if ctx.Err() != nil {
		return
	}
	a.rounds.Add(1)
	a.measured.Store(int64(len(targets)))
	a.roundTime.Store(int64(time.Since(start)))
	a.log.Debug("measured", zap.Int("targets", len(targets)), zap.Duration("took", time.Since(start)))
	body, err := json.Marshal(r)
	if err != nil {
		a.log.Error("encoding report", zap.Error(err))
		return
	}
	for _, s := range a.active() {
		s.push(body)
	}
}

// active are the senders now.
func (a *Agent) active() []*sender {
	a.smu.Lock()
	defer a.smu.Unlock()
	return slices.Clone(a.senders)
}

// start runs s until the agent's Run ends or s is stopped; smu held.
func (a *Agent) start(s *sender) {
	ctx, cancel := context.WithCancel(a.running)
	s.stop = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		s.run(ctx)
	}()
}

// loadTargets reads the target file, or asks the collectors in turn; on
// failure it returns the last list it had.
func (a *Agent) loadTargets(ctx context.Context) ([]Target, error) {
	var list targetList
	var err error
	if a.cfg.TargetsFile != "" {
		var raw []byte
		if raw, err = os.ReadFile(a.cfg.TargetsFile); err == nil {
			err = json.Unmarshal(raw, &list)
		}
	} else {
		for _, s := range a.active() {
			if list, err = s.fetchTargets(ctx); err == nil {
				break
			}
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		a.targets = list.Targets
	}
	return a.targets, err
}

type targetList struct {
	Edge    string   `json:"edge,omitempty"`
	Targets []Target `json:"targets"`
}

// measure connects Samples times to every target, at most Concurrency
// connects at a time.
func (a *Agent) measure(ctx context.Context, targets []Target) []Measurement {
	out := make([]Measurement, len(targets))
	sem := make(chan struct{}, a.cfg.Concurrency)
	var wg sync.WaitGroup
	d := net.Dialer{Timeout: a.cfg.Timeout}
	if a.cfg.Source.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(a.cfg.Source, 0))
	}
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rtts := make([]float64, 0, a.cfg.Samples)
			for range a.cfg.Samples {
				sem <- struct{}{}
				start := time.Now()
				conn, err := d.DialContext(ctx, "tcp", t.Probe.String())
				rtt := time.Since(start)
				<-sem
				if err == nil {
					conn.Close()
					rtts = append(rtts, float64(rtt.Microseconds())/1000)
				}
			}
			m := Measurement{Target: t.Block, Samples: a.cfg.Samples}
			m.Loss = float64(a.cfg.Samples-len(rtts)) / float64(a.cfg.Samples)
			if len(rtts) > 0 {
				slices.Sort(rtts)
				m.RTTMs = max(rtts[len(rtts)/2], 0.001) // the median; an RTT is never 0
			}
			out[i] = m
		}()
	}
	wg.Wait()
	return out
}

// nextSeq is strictly increasing across restarts of the agent too: it
// starts from the clock in nanoseconds.
func (a *Agent) nextSeq() uint64 {
	for {
		last := a.seq.Load()
		next := max(last+1, uint64(time.Now().UnixNano()))
		if a.seq.CompareAndSwap(last, next) {
			return next
		}
	}
}

// sender delivers reports to one collector.
type sender struct {
	a    *Agent
	base string
	wake chan struct{}
	stop context.CancelFunc // set by start

	// id is the name server's, once known (discover.go); discovered, a
	// sender the agent was not given but found.
	id         string
	discovered bool

	mu      sync.Mutex // guards queue and lastErr
	queue   [][]byte
	lastErr string

	sent, rejected, dropped atomic.Uint64
	lastOK                  atomic.Int64 // unix ns of the last report accepted
	authFails               atomic.Int32 // requests in a row answered 401
}

func (s *sender) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.lastErr = ""
	} else {
		s.lastErr = err.Error()
	}
}

func (s *sender) push(body []byte) {
	s.mu.Lock()
	if len(s.queue) >= s.a.cfg.Queue {
		s.queue = s.queue[1:]
		s.dropped.Add(1)
		s.a.log.Warn("report queue full; dropped the oldest report", zap.String("collector", s.base))
	}
	s.queue = append(s.queue, body)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sender) peek() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	return s.queue[0]
}

// pop removes body if it is still the head (push may have dropped it).
func (s *sender) pop(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 && &s.queue[0][0] == &body[0] {
		s.queue = s.queue[1:]
	}
}

func (s *sender) run(ctx context.Context) {
	failures := 0
	for {
		body := s.peek()
		if body == nil {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		err := s.post(ctx, body)
		s.setErr(err)
		var perm *permanentError
		switch {
		case err == nil:
			s.sent.Add(1)
			s.lastOK.Store(time.Now().UnixNano())
			s.pop(body)
			failures = 0
			continue
		case errors.As(err, &perm):
			// Retrying what the collector refused would fail again.
			s.rejected.Add(1)
			s.pop(body)
			s.a.log.Error("collector rejected a report", zap.String("collector", s.base), zap.Error(err))
			continue
		}
		failures++
		wait := backoff(failures)
		s.a.log.Warn("report not delivered; retrying", zap.String("collector", s.base), zap.Duration("in", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// backoff doubles from half a second to maxBackoff, with jitter so that
// agents do not return in step after a collector restart.
func backoff(failures int) time.Duration {
	d := min(maxBackoff, 500*time.Millisecond<<min(failures-1, 10))
	return d/2 + rand.N(d/2+1)
}

type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func (s *sender) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, &permanentError{err.Error()}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	Sign(req, body, s.a.cfg.KeyID, s.a.cfg.Secret, time.Now(), s.a.nextSeq())
	resp, err := s.a.cfg.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	s.a.noteAuth(s, resp.StatusCode == http.StatusUnauthorized)
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxReportBytes))
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode < 300:
		return raw, nil
	case resp.StatusCode == http.StatusConflict, resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode == http.StatusUnauthorized: // a clock jump or a key not yet added: try again
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(raw))
	case resp.StatusCode < 500:
		return nil, &permanentError{fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(raw))}
	}
	return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(raw))
}

func (s *sender) post(ctx context.Context, body []byte) error {
	raw, err := s.do(ctx, http.MethodPost, "/v1/reports", body)
	if err != nil {
		return err
	}
	// Ignored measurements are normal after a retry whose first attempt
	// was stored; a collector that predates "ignored" leaves it 0.
	var resp reportResponse
	if json.Unmarshal(raw, &resp) == nil && resp.Ignored > 0 {
		s.a.log.Debug("collector ignored measurements of a report", zap.String("collector", s.base),
			zap.Int("stored", resp.Accepted), zap.Int("ignored", resp.Ignored), zap.String("reason", resp.IgnoredReason))
	}
	return nil
}

func (s *sender) fetchTargets(ctx context.Context) (targetList, error) {
	var list targetList
	raw, err := s.do(ctx, http.MethodGet, "/v1/targets", nil)
	if err != nil {
		s.setErr(fmt.Errorf("targets: %w", err))
		return list, fmt.Errorf("targets from %s: %w", s.base, err)
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return list, fmt.Errorf("targets from %s: %w", s.base, err)
	}
	return list, nil
}
