package main

import (
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
)

func nodeCommand() *cli.Command {
	return &cli.Command{Name: "node", Usage: "the fleet's name servers", Subcommands: []*cli.Command{
		request("list", "list the name servers of the fleet: what each serves, how old its map is, which are behind",
			[]cli.Flag{jsonFlag}, "GET", fixed("/v1/nodes"), nil, printNodes),
	}}
}

// printNodes prints one line per server; map ages are as of this
// machine's clock.
func printNodes(c *cli.Context, ns config.Nodes) error {
	if !c.Bool("json") {
		switch {
		case !ns.Fleet:
			fmt.Fprintln(c.App.Writer, "a single name server (not in a fleet)")
		default:
			fmt.Fprintf(c.App.Writer, "fleet at configuration revision %d; etcd %s\n", ns.Revision, ns.Etcd)
		}
	}
	now := time.Now()
	return show(c, ns, "ID\tDNS\tAPI\tREVISION\tSERIAL\tMAP AGE\tREPORTS\tSTATE", func(w *tabwriter.Writer) {
		for _, n := range ns.Nodes {
			state := "ok"
			if n.Behind {
				state = "behind"
			}
			if n.Self {
				state += " (answered)"
			}
			age := "-"
			if !n.MapBuilt.IsZero() {
				age = now.Sub(n.MapBuilt).Round(time.Second).String()
			}
			reports := strconv.FormatUint(n.Reports, 10)
			if !ns.Fleet {
				reports = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", n.ID, n.DNS, n.API, n.Revision, n.Serial, age, reports, state)
		}
	})
}
