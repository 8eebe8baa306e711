package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/probe"
)

func targetCommand() *cli.Command {
	return &cli.Command{
		Name:  "target",
		Usage: "manage targets: client networks the probes measure",
		Subcommands: []*cli.Command{
			{
				Name:  "add",
				Usage: "add a target: --block 203.0.113.0/24 --probe 203.0.113.10:443",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "block", Required: true, Usage: "client network (any prefix length)"},
					&cli.StringFlag{Name: "probe", Required: true, Usage: "address:port inside the block that agents TCP-connect to"},
				},
				Action: func(c *cli.Context) error {
					s := config.TargetSpec{Block: c.String("block"), Probe: c.String("probe")}
					if err := newClient(c).do("POST", "/v1/map/targets", s, nil); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "added target %s via %s\n", s.Block, s.Probe)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list targets with each edge's freshest RTT",
				Flags: []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					var targets []config.MeasuredTarget
					if err := newClient(c).do("GET", "/v1/map/targets", nil, &targets); err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c, targets)
					}
					now := time.Now()
					return table(c, "BLOCK\tPROBE\tMEASURED (edge smoothed-rtt loss age, best first)", func(w *tabwriter.Writer) {
						for _, t := range targets {
							var parts []string
							for _, m := range t.Measured {
								parts = append(parts, fmt.Sprintf("%s %.1fms %.0f%% %s", m.Edge, m.RTTMs, m.Loss*100, now.Sub(m.At).Round(time.Second)))
							}
							if len(parts) == 0 {
								parts = []string{"-"}
							}
							fmt.Fprintf(w, "%s\t%s\t%s\n", t.Block, t.Probe, strings.Join(parts, ", "))
						}
					})
				},
			},
			{
				Name:  "rm",
				Usage: "remove a target",
				Flags: []cli.Flag{&cli.StringFlag{Name: "block", Required: true}},
				Action: func(c *cli.Context) error {
					if err := newClient(c).do("DELETE", "/v1/map/targets?block="+url.QueryEscape(c.String("block")), nil, nil); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, "removed target", c.String("block"))
					return nil
				},
			},
		},
	}
}

func keyCommand() *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "manage probe agent keys",
		Subcommands: []*cli.Command{
			{
				Name:  "add",
				Usage: "create a key bound to an edge and print its secret once",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "id", Required: true},
					&cli.StringFlag{Name: "edge", Required: true, Usage: "the edge this key may report for"},
				},
				Action: func(c *cli.Context) error {
					var k config.Key
					if err := newClient(c).do("POST", "/v1/keys", map[string]string{"id": c.String("id"), "edge": c.String("edge")}, &k); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, k.Secret)
					fmt.Fprintf(c.App.ErrWriter, "key %s for edge %s: the secret above is shown only now; put it in a file only the agent can read (edgemap probe --secret-file)\n", k.ID, k.Edge)
					return nil
				},
			},
			{
				Name:  "list",
				Usage: "list keys (never their secrets)",
				Flags: []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					var keys []config.Key
					if err := newClient(c).do("GET", "/v1/keys", nil, &keys); err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c, keys)
					}
					return table(c, "ID\tEDGE\tCREATED", func(w *tabwriter.Writer) {
						for _, k := range keys {
							fmt.Fprintf(w, "%s\t%s\t%s\n", k.ID, k.Edge, k.Created.Format(time.RFC3339))
						}
					})
				},
			},
			{
				Name:  "rm",
				Usage: "remove a key; its agent is refused from then on",
				Flags: []cli.Flag{&cli.StringFlag{Name: "id", Required: true}},
				Action: func(c *cli.Context) error {
					if err := newClient(c).do("DELETE", "/v1/keys/"+url.PathEscape(c.String("id")), nil, nil); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, "removed key", c.String("id"))
					return nil
				},
			},
		},
	}
}

func probeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "run a probe agent beside an edge: measure the targets and report to every name server",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "edge", Required: true, EnvVars: []string{"EDGEMAP_EDGE"}, Usage: "the edge this agent runs beside"},
			&cli.StringSliceFlag{Name: "collector", Required: true, EnvVars: []string{"EDGEMAP_COLLECTORS"}, Usage: "a name server's admin API URL (http://ns1:8053); repeat for each"},
			&cli.StringFlag{Name: "key-id", Required: true, EnvVars: []string{"EDGEMAP_KEY_ID"}},
			&cli.StringFlag{Name: "secret-file", Required: true, EnvVars: []string{"EDGEMAP_SECRET_FILE"}, Usage: "file holding the key's secret (from `edgemap key add`)"},
			&cli.DurationFlag{Name: "interval", Value: probe.DefaultInterval, EnvVars: []string{"EDGEMAP_INTERVAL"}},
			&cli.IntFlag{Name: "samples", Value: probe.DefaultSamples, Usage: "TCP connects per target per interval"},
			&cli.DurationFlag{Name: "timeout", Value: probe.DefaultTimeout, Usage: "one connect's time limit; slower is lost"},
			&cli.IntFlag{Name: "concurrency", Value: probe.DefaultConcurrency, Usage: "connects in flight at most"},
			&cli.IntFlag{Name: "queue", Value: probe.DefaultQueue, Usage: "reports kept per unreachable collector; the oldest is dropped beyond"},
			&cli.StringFlag{Name: "targets-file", Usage: "read targets from this JSON file instead of the collectors"},
			&cli.StringFlag{Name: "source", Usage: "local address to connect from"},
			&cli.StringFlag{Name: "check", Usage: "health check of this agent's own edge, reported with each round: http://host/path or tcp://host:port"},
			&cli.StringFlag{Name: "log-format", Value: "json", EnvVars: []string{"EDGEMAP_LOG_FORMAT"}},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"EDGEMAP_LOG_LEVEL"}},
		},
		Action: func(c *cli.Context) error {
			log, err := newLogger(c.String("log-format"), c.String("log-level"))
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
				Source: source, Check: check, Log: log.Named("probe"),
			})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			log.Info("probing", zap.String("edge", c.String("edge")), zap.Strings("collectors", c.StringSlice("collector")))
			return agent.Run(ctx)
		},
	}
}
