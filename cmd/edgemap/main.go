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
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgemap/edgemap/mapping"
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
			&cli.StringFlag{Name: "api", Value: defaultAPI, EnvVars: []string{"EDGEMAP_API"}, Usage: "admin API of the name server to manage, http://host:port"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"EDGEMAP_API_TOKEN"}, Usage: "bearer token for the admin API"},
			&cli.BoolFlag{Name: "version", Usage: "print the version and exit"},
		},
		HideVersion: true, // --version above prints the commit and Go version too
		Commands:    commands(),
		Action: func(c *cli.Context) error {
			if c.Bool("version") {
				readBuildInfo().print(c.App.Writer)
				return nil
			}
			if c.Args().Present() {
				return fmt.Errorf("no command %q (see edgemap --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		// Errors are printed once, by main, with their field.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError,
	}
}

// commands are edgemap's subcommands. Those that are clients of the admin
// API also take --api and --token after their name (`edgemap edge list
// --token T`), and every command says what is wrong with a flag without
// printing its whole help.
func commands() []*cli.Command {
	clients := []*cli.Command{zoneCommand(), edgeCommand(), propertyCommand(), applyCommand(), mapCommand(),
		targetCommand(), recordCommand(), customerCommand(), keyCommand(), nodeCommand(), eventsCommand()}
	for _, c := range clients {
		eachLeaf(c, func(leaf *cli.Command) { leaf.Flags = append(leaf.Flags, clientFlags()...) })
	}
	all := append([]*cli.Command{serveCommand(), checkCommand()}, clients...)
	all = append(all, probeCommand(), dbCommand(), versionCommand())
	for _, c := range all {
		eachLeaf(c, func(leaf *cli.Command) { leaf.OnUsageError = usageError })
		c.OnUsageError = usageError
	}
	return all
}

func eachLeaf(c *cli.Command, fn func(*cli.Command)) {
	if len(c.Subcommands) == 0 {
		fn(c)
	}
	for _, sub := range c.Subcommands {
		eachLeaf(sub, fn)
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

// badFlagValue is the flag package's error for a value a flag cannot
// parse.
var badFlagValue = regexp.MustCompile(`^invalid value "(.*)" for flag -([\w-]+): `)

// usageError says what is wrong with a command line in one line, and for
// a value that does not parse, what to write instead (a duration needs its
// unit: `--map-interval 10` means nothing, `10s` does).
func usageError(c *cli.Context, err error, _ bool) error {
	m := badFlagValue.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("%w (see --help)", err)
	}
	value, name := m[1], m[2]
	var flag cli.Flag
	if c.Command != nil {
		for _, f := range c.Command.Flags {
			if slices.Contains(f.Names(), name) {
				flag = f
			}
		}
	}
	want := "see --help"
	switch flag.(type) {
	case *cli.DurationFlag:
		if _, perr := strconv.ParseFloat(value, 64); perr == nil {
			return mapping.FieldErrorf("--"+name, "%q: a duration needs its unit: %ss (seconds), %sms or %sm", value, value, value, value)
		}
		want = "a duration with its unit, e.g. 10s, 500ms, 2m or 1h"
	case *cli.IntFlag, *cli.Int64Flag:
		want = "a whole number"
	case *cli.UintFlag, *cli.Uint64Flag:
		want = "a whole number, 0 or more"
	case *cli.Float64Flag:
		want = "a number"
	case *cli.BoolFlag:
		want = "true or false (--" + name + " alone is true)"
	}
	return mapping.FieldErrorf("--"+name, "%q: want %s", value, want)
}
