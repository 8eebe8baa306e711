package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/probe"
)

func probeCommand() *cli.Command {
	return &cli.Command{Name: "probe", Usage: "run a probe agent beside an edge: measure the targets and report to every name server", Action: runAgent,
		Flags: append(logFlags(),
			required("edge", "the edge this agent runs beside"),
			&cli.StringSliceFlag{Name: "collector", Required: true, EnvVars: []string{"EDGEMAP_COLLECTORS"}, Usage: "a name server's admin API URL (http://ns1:8053); repeat for each"},
			required("key-id", "the key's id (from edgemap key add)"),
			required("secret-file", "file holding the key's secret (from edgemap key add), readable by the agent alone"),
			dur("interval", probe.DefaultInterval, "how often the targets are measured and reported"),
			&cli.IntFlag{Name: "samples", Value: probe.DefaultSamples, Usage: "TCP connects per target per interval"},
			&cli.DurationFlag{Name: "timeout", Usage: "one connect's time limit; slower is lost", DefaultText: "2s, or half of --interval if that is shorter"},
			&cli.IntFlag{Name: "concurrency", Value: probe.DefaultConcurrency, Usage: "connects in flight at most"},
			&cli.IntFlag{Name: "queue", Value: probe.DefaultQueue, Usage: "reports kept per unreachable collector; the oldest is dropped beyond"},
			&cli.StringFlag{Name: "targets-file", Usage: "read targets from this JSON file instead of the collectors"},
			&cli.StringFlag{Name: "source", Usage: "local address to connect from"},
			&cli.StringFlag{Name: "check", Usage: "health check of this agent's own edge, reported with each round: http://host/path or tcp://host:port"},
			str("metrics-listen", "", "address to serve the agent's /metrics and /healthz on, e.g. 127.0.0.1:9154 (default: none)"),
			&cli.BoolFlag{Name: "discover", Value: true, EnvVars: env("discover"), Usage: "also report to every name server of the collectors' fleet, as GET /v1/nodes lists them"},
		)}
}

// runAgent is `edgemap probe`: an agent until SIGINT or SIGTERM.
func runAgent(c *cli.Context) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	defer log.Sync()
	raw, err := os.ReadFile(c.String("secret-file"))
	if err != nil {
		return fmt.Errorf("--secret-file: %w", err)
	}
	if fi, err := os.Stat(c.String("secret-file")); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the secret file is readable by others than its owner: chmod 600 it", zap.String("secret_file", c.String("secret-file")),
			zap.String("mode", fmt.Sprintf("%04o", fi.Mode().Perm())))
	}
	secret, err := probe.DecodeSecret(string(raw))
	if err != nil {
		return fmt.Errorf("--secret-file %s: %w", c.String("secret-file"), err)
	}
	var source netip.Addr
	if s := c.String("source"); s != "" {
		if source, err = netip.ParseAddr(s); err != nil {
			return fmt.Errorf("--source: %q is not an IP address", s)
		}
	}
	var check *probe.Check
	if spec := c.String("check"); spec != "" {
		ch, err := probe.ParseCheck(spec)
		if err != nil {
			return fmt.Errorf("--check: %w", err)
		}
		check = &ch
	}
	timeout, err := agentTimeout(c.Duration("interval"), c.Duration("timeout"), c.IsSet("timeout"))
	if err != nil {
		return err
	}
	agent, err := probe.NewAgent(probe.AgentConfig{
		Edge: c.String("edge"), Collectors: c.StringSlice("collector"), KeyID: c.String("key-id"), Secret: secret,
		Interval: c.Duration("interval"), Samples: c.Int("samples"), Timeout: timeout,
		Concurrency: c.Int("concurrency"), Queue: c.Int("queue"), TargetsFile: c.String("targets-file"),
		Source: source, Check: check, Discover: c.Bool("discover"), Log: log.Named("probe"),
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmp.Or(c.Context, context.Background()), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if addr := c.String("metrics-listen"); addr != "" {
		srv, _, err := serveAgentMetrics(addr, agent, log)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	log.Info("probing", zap.String("edge", c.String("edge")), zap.Strings("collectors", c.StringSlice("collector")),
		zap.Duration("interval", c.Duration("interval")), zap.Duration("timeout", timeout), zap.String("version", readBuildInfo().Version))
	notify := &notifier{log: log.Named("systemd")}
	notify.ready(fmt.Sprintf("probing for edge %s, reporting to %d name server(s)", c.String("edge"), len(c.StringSlice("collector"))))
	// STOPPING as the stop begins, and surely before the process exits
	// (Run may return before the goroutine sees ctx end).
	var stopOnce sync.Once
	stopping := func() { stopOnce.Do(notify.stopping) }
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			stopping()
		case <-done:
		}
	}()
	// The agent's loop has no liveness to ask; the keep-alive says the
	// process runs.
	go notify.watchdog(ctx, func(context.Context) error { return nil })
	err = agent.Run(ctx)
	if ctx.Err() != nil {
		stopping()
	}
	return err
}

// agentTimeout is --timeout: as given, which must be shorter than
// --interval, or by default probe.DefaultTimeout, cut to half the interval
// so that a short --interval works alone.
func agentTimeout(interval, timeout time.Duration, given bool) (time.Duration, error) {
	if interval <= 0 {
		return 0, fmt.Errorf("--interval %v must be positive", interval)
	}
	if !given {
		return min(probe.DefaultTimeout, interval/2), nil
	}
	if timeout <= 0 || timeout >= interval {
		return 0, fmt.Errorf("--timeout %v must be positive and shorter than --interval %v", timeout, interval)
	}
	return timeout, nil
}

// serveAgentMetrics serves the agent's /metrics and /healthz on addr:
// healthz is 503 while no collector has accepted a report for
// probe.SilentIntervals intervals, so that a supervisor or a monitor sees
// an agent that measures but cannot report.
func serveAgentMetrics(addr string, a *probe.Agent, log *zap.Logger) (*http.Server, net.Addr, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), agentCollector{a})
	readBuildInfo().register(reg)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		unhealthy, degraded := a.Health(time.Now())
		body := map[string]any{"status": "ok", "collectors": a.Stats()}
		status := http.StatusOK
		switch {
		case unhealthy != "":
			body["status"], body["reason"], status = "unavailable", unhealthy, http.StatusServiceUnavailable
		case len(degraded) > 0:
			body["status"], body["reason"] = "degraded", strings.Join(degraded, "; ")
		}
		probe.WriteJSON(w, status, body)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	// Only scrapes and health checks come here: short timeouts bound a
	// slow client.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", zap.Error(err))
		}
	}()
	log.Info("serving the agent's metrics and health", zap.String("addr", ln.Addr().String()))
	return srv, ln.Addr(), nil
}

// agentCollector exports the agent's counters when scraped.
type agentCollector struct{ a *probe.Agent }

var (
	agentReports = prometheus.NewDesc("edgemap_probe_reports_total",
		"Reports per collector by result: sent (accepted), rejected (refused for good: a 4xx but 401, 409 and 429), dropped (the queue was full).", []string{"collector", "result"}, nil)
	agentQueued = prometheus.NewDesc("edgemap_probe_queued_reports", "Reports waiting for the collector.", []string{"collector"}, nil)
	agentLastOK = prometheus.NewDesc("edgemap_probe_last_accepted_timestamp_seconds",
		"When the collector last accepted a report (unix seconds); absent before the first.", []string{"collector"}, nil)
	agentAuthFails = prometheus.NewDesc("edgemap_probe_auth_failures",
		"Requests in a row the collector refused the key (401); the agent stops when every collector has refused it "+strconv.Itoa(probe.AuthFailuresToStop)+" times.", []string{"collector"}, nil)
	agentRounds    = prometheus.NewDesc("edgemap_probe_rounds_total", "Measurement rounds completed.", nil, nil)
	agentTargets   = prometheus.NewDesc("edgemap_probe_targets", "Targets measured in the last round.", nil, nil)
	agentRoundTime = prometheus.NewDesc("edgemap_probe_round_seconds", "How long the last round took.", nil, nil)
	agentEdgeUp    = prometheus.NewDesc("edgemap_probe_edge_up", "The agent's own check of its edge (--check): 1 up, 0 down; absent without one.", nil, nil)
)

func (agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{agentReports, agentQueued, agentLastOK, agentAuthFails, agentRounds, agentTargets, agentRoundTime, agentEdgeUp} {
		ch <- d
	}
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.a.Stats() {
		for result, n := range map[string]uint64{"sent": st.Sent, "rejected": st.Rejected, "dropped": st.Dropped} {
			ch <- prometheus.MustNewConstMetric(agentReports, prometheus.CounterValue, float64(n), st.Collector, result)
		}
		ch <- prometheus.MustNewConstMetric(agentQueued, prometheus.GaugeValue, float64(st.Queued), st.Collector)
		ch <- prometheus.MustNewConstMetric(agentAuthFails, prometheus.GaugeValue, float64(st.AuthFailures), st.Collector)
		if !st.LastAccepted.IsZero() {
			ch <- prometheus.MustNewConstMetric(agentLastOK, prometheus.GaugeValue, float64(st.LastAccepted.UnixNano())/1e9, st.Collector)
		}
	}
	r := c.a.Rounds()
	ch <- prometheus.MustNewConstMetric(agentRounds, prometheus.CounterValue, float64(r.Rounds))
	ch <- prometheus.MustNewConstMetric(agentTargets, prometheus.GaugeValue, float64(r.Targets))
	ch <- prometheus.MustNewConstMetric(agentRoundTime, prometheus.GaugeValue, r.Duration.Seconds())
	if r.EdgeUp != nil {
		ch <- prometheus.MustNewConstMetric(agentEdgeUp, prometheus.GaugeValue, map[bool]float64{true: 1, false: 0}[*r.EdgeUp])
	}
}
