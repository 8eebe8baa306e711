// Command edgemap is the CDN request router: `edgemap serve` runs the
// authoritative name server, its admin API and the map; `edgemap probe`
// runs a probe agent; `edgemap db check` reads a database file offline;
// every other subcommand is a thin client of the admin API.
//
// This package is the CLI and the wiring only: serve.go connects a node
// (internal/node: the map and what it is built from), the resolver and the
// admin API (internal/api); the configuration model is internal/config.
// README "Architecture" draws the packages and their arrows.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "edgemap:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "edgemap",
		Usage: "answer each lookup of a CDN hostname with the fastest edge",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "api", Value: "http://127.0.0.1:8053", EnvVars: []string{"EDGEMAP_API"}, Usage: "admin API of the name server to manage"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"EDGEMAP_API_TOKEN"}, Usage: "bearer token for the admin API"},
		},
		Commands: []*cli.Command{
			serveCommand(),
			zoneCommand(),
			edgeCommand(),
			propertyCommand(),
			applyCommand(),
			mapCommand(),
			targetCommand(),
			recordCommand(),
			customerCommand(),
			keyCommand(),
			nodeCommand(),
			probeCommand(),
			dbCommand(),
		},
		// Errors are printed once, by main, with their field.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return fmt.Errorf("%w (see --help)", err)
		},
	}
}

// env is the environment variable of a flag: EDGEMAP_ and its name in
// capitals, '-' as '_'.
func env(flag string) []string {
	return []string{"EDGEMAP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

// logFlags are the logging flags of the commands that run (serve, probe).
func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-format", Value: "json", EnvVars: env("log-format"), Usage: "json or console"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("log-level"), Usage: "debug, info, warn or error"},
	}
}

// newLogger is the logger --log-format and --log-level ask for.
func newLogger(c *cli.Context) (*zap.Logger, error) {
	format, level := c.String("log-format"), c.String("log-level")
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	default:
		return nil, fmt.Errorf("--log-format: %q: want json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	return cfg.Build()
}

func printJSON(c *cli.Context, v any) error {
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
