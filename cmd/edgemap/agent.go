package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/probe"
)

func probeCommand() *cli.Command {
	return &cli.Command{Name: "probe", Usage: "run a probe agent beside an edge: measure the targets and report to every name server", Action: runAgent,
		Flags: append(logFlags(),
			required("edge", "the edge this agent runs beside"),
			&cli.StringSliceFlag{Name: "collector", Required: true, EnvVars: []string{"EDGEMAP_COLLECTORS"}, Usage: "a name server's admin API URL (http://ns1:8053); repeat for each"},
			required("key-id", "the key's id (from `edgemap key add`)"),
			required("secret-file", "file holding the key's secret (from `edgemap key add`)"),
			dur("interval", probe.DefaultInterval, "how often the targets are measured and reported"),
			&cli.IntFlag{Name: "samples", Value: probe.DefaultSamples, Usage: "TCP connects per target per interval"},
			&cli.DurationFlag{Name: "timeout", Value: probe.DefaultTimeout, Usage: "one connect's time limit; slower is lost"},
			&cli.IntFlag{Name: "concurrency", Value: probe.DefaultConcurrency, Usage: "connects in flight at most"},
			&cli.IntFlag{Name: "queue", Value: probe.DefaultQueue, Usage: "reports kept per unreachable collector; the oldest is dropped beyond"},
			&cli.StringFlag{Name: "targets-file", Usage: "read targets from this JSON file instead of the collectors"},
			&cli.StringFlag{Name: "source", Usage: "local address to connect from"},
			&cli.StringFlag{Name: "check", Usage: "health check of this agent's own edge, reported with each round: http://host/path or tcp://host:port"},
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
	if c.Duration("timeout") >= c.Duration("interval") {
		return fmt.Errorf("--timeout %v must be shorter than --interval %v", c.Duration("timeout"), c.Duration("interval"))
	}
	agent, err := probe.NewAgent(probe.AgentConfig{
		Edge: c.String("edge"), Collectors: c.StringSlice("collector"), KeyID: c.String("key-id"), Secret: secret,
		Interval: c.Duration("interval"), Samples: c.Int("samples"), Timeout: c.Duration("timeout"),
		Concurrency: c.Int("concurrency"), Queue: c.Int("queue"), TargetsFile: c.String("targets-file"),
		Source: source, Check: check, Discover: c.Bool("discover"), Log: log.Named("probe"),
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("probing", zap.String("edge", c.String("edge")), zap.Strings("collectors", c.StringSlice("collector")))
	notify := &notifier{log: log.Named("systemd")}
	notify.ready(fmt.Sprintf("probing for edge %s, reporting to %d name server(s)", c.String("edge"), len(c.StringSlice("collector"))))
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			notify.stopping()
		case <-done:
		}
	}()
	// The agent's loop has no liveness to ask; the keep-alive says the
	// process runs.
	go notify.watchdog(ctx, func(context.Context) error { return nil })
	return agent.Run(ctx)
}
