package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Check is an edge health check: an HTTP GET that must answer 2xx or 3xx,
// or a TCP connect.
type Check struct {
	spec string
	http bool
	addr string // host:port for tcp; the URL for http
}

// ParseCheck reads "http://host[:port]/path", "https://..." or
// "tcp://host:port".
func ParseCheck(spec string) (Check, error) {
	u, err := url.Parse(spec)
	if err != nil {
		return Check{}, fmt.Errorf("check %q: %w", spec, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return Check{}, fmt.Errorf("check %q: no host", spec)
		}
		return Check{spec: spec, http: true, addr: spec}, nil
	case "tcp":
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" || u.Path != "" {
			return Check{}, fmt.Errorf("check %q: want tcp://host:port", spec)
		}
		return Check{spec: spec, addr: u.Host}, nil
	}
	return Check{}, fmt.Errorf("check %q: want http://, https:// or tcp://", spec)
}

// String is the check as written.
func (c Check) String() string { return c.spec }

// checkClient never follows redirects (a 3xx is an answer) and keeps no
// idle connections, so every check tests a fresh connect.
var checkClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// Run performs the check once within timeout.
func (c Check) Run(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !c.http {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.addr, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "edgemap-check")
	resp, err := checkClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 400 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// MonitorConfig configures a Monitor. Durations and counts must be positive.
type MonitorConfig struct {
	Interval, Timeout  time.Duration
	DownAfter, UpAfter int
	// OnChange is called, from the edge's goroutine, when an edge's state
	// flips and when its first check completes, with why: the checks in a
	// row and the last failure's error.
	OnChange func(edge string, up bool, at time.Time, reason string)
	Log      *zap.Logger
}

// Monitor runs one check loop per edge, with hysteresis: an edge goes down
// after DownAfter consecutive failures and up after UpAfter consecutive
// successes, so one lost packet does not flap the map.
type Monitor struct {
	cfg MonitorConfig

	mu    sync.Mutex // guards loops
	loops map[string]*checkLoop
}

type checkLoop struct {
	check  Check
	cancel context.CancelFunc
	done   chan struct{}
}

// NewMonitor returns a Monitor with no edges.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	if cfg.Interval <= 0 || cfg.Timeout <= 0 || cfg.DownAfter <= 0 || cfg.UpAfter <= 0 {
		return nil, errors.New("check interval, timeout, down-after and up-after must be positive")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Monitor{cfg: cfg, loops: map[string]*checkLoop{}}, nil
}

// Set makes the monitor check exactly the given edges: loops start for new
// edges (believing initial[edge] until their first check completes, up if
// absent), stop for removed ones and restart for changed checks.
func (m *Monitor) Set(checks map[string]Check, initial map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, l := range m.loops {
		if c, ok := checks[id]; !ok || c != l.check {
			l.cancel()
			<-l.done
			delete(m.loops, id)
		}
	}
	for id, c := range checks {
		if _, ok := m.loops[id]; ok {
			continue
		}
		up, ok := initial[id]
		if !ok {
			up = true
		}
		ctx, cancel := context.WithCancel(context.Background())
		l := &checkLoop{check: c, cancel: cancel, done: make(chan struct{})}
		m.loops[id] = l
		go m.run(ctx, id, c, up, l.done)
	}
}

// Close stops every loop.
func (m *Monitor) Close() { m.Set(nil, nil) }

func (m *Monitor) run(ctx context.Context, id string, c Check, up bool, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	fails, oks, first := 0, 0, true
	var lastErr error
	for {
		err := c.Run(ctx, m.cfg.Timeout)
		if ctx.Err() != nil {
			return
		}
		was := up
		if err != nil {
			fails, oks, lastErr = fails+1, 0, err
			if up && fails >= m.cfg.DownAfter {
				up = false
			}
			m.cfg.Log.Debug("check failed", zap.String("edge", id), zap.String("check", c.String()), zap.Error(err))
		} else {
			oks, fails = oks+1, 0
			if !up && oks >= m.cfg.UpAfter {
				up = true
			}
		}
		if up != was || first {
			if up != was {
				m.cfg.Log.Info("edge health changed", zap.String("edge", id), zap.Bool("up", up), zap.String("check", c.String()))
			}
			var reason string
			switch {
			case err != nil && !up:
				reason = fmt.Sprintf("%s failed %d times in a row: %v", c, fails, err)
			case err != nil:
				reason = fmt.Sprintf("%s failed (%d of the %d failures in a row that make it down): %v", c, fails, m.cfg.DownAfter, err)
			case up:
				reason = fmt.Sprintf("%s passed %d times in a row", c, oks)
			default:
				reason = fmt.Sprintf("%s passed (%d of the %d passes in a row that make it up); it last failed: %v", c, oks, m.cfg.UpAfter, lastErr)
			}
			m.cfg.OnChange(id, up, time.Now(), reason)
			first = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
