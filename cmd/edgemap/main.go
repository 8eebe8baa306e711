// Command edgemap is the CDN request router: `edgemap serve` runs the
// authoritative name server, its admin API and the map; every other
// subcommand is a thin client of that API.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
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
			keyCommand(),
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
