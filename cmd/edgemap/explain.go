package main

import (
	"fmt"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/mapping"
)

func mapCommand() *cli.Command {
	return &cli.Command{
		Name:  "map",
		Usage: "inspect the map",
		Subcommands: []*cli.Command{{
			Name:  "explain",
			Usage: "rank a property's edges for a query as it reaches the name server, as the resolver does",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "property", Required: true},
				&cli.StringFlag{Name: "client", Usage: "the user's address, sent as ECS by the resolver"},
				&cli.IntFlag{Name: "source-prefix", Usage: "the ECS source prefix length the resolver sends (default 24 for IPv4, 56 for IPv6)"},
				&cli.StringFlag{Name: "resolver", Usage: "the address the query comes from; alone, a query without ECS"},
				&cli.StringFlag{Name: "family", Value: "A", Usage: "A or AAAA"},
				jsonFlag,
			},
			Action: func(c *cli.Context) error {
				q := url.Values{"property": {c.String("property")}, "family": {c.String("family")}}
				for _, f := range []string{"client", "resolver"} {
					if c.IsSet(f) {
						q.Set(f, c.String(f))
					}
				}
				if c.IsSet("source-prefix") {
					q.Set("source_prefix", strconv.Itoa(c.Int("source-prefix")))
				}
				var x mapping.Explanation
				if err := newClient(c).do("GET", "/v1/map/explain?"+q.Encode(), nil, &x); err != nil {
					return err
				}
				if c.Bool("json") {
					return printJSON(c, x)
				}
				return printExplanation(c, &x)
			},
		}},
	}
}

func printExplanation(c *cli.Context, x *mapping.Explanation) error {
	w := c.App.Writer
	fmt.Fprintf(w, "property  %s  %s, %d answer(s)\n", x.Property, x.Family, x.Answers)
	switch {
	case !x.ECS.IsValid():
		fmt.Fprintf(w, "query     from %s without ECS\n", x.Resolver)
	case x.Resolver.IsValid():
		fmt.Fprintf(w, "query     ECS %s from %s\n", x.ECS, x.Resolver)
	default:
		fmt.Fprintf(w, "query     ECS %s\n", x.ECS)
	}
	if x.DecidedBy != "ecs" && x.ECSUnused != "" {
		fmt.Fprintf(w, "ecs       not used: %s; the query's source address decides\n", x.ECSUnused)
	}
	where := "no location"
	if x.Place != nil {
		where = fmt.Sprintf("%s, %s (%.2f, %.2f)", x.Place.City, x.Place.Country, x.Place.Lat, x.Place.Lon)
	}
	if x.Unit != "" {
		fmt.Fprintf(w, "client    %s  in target %s: %s\n", x.Client, x.Unit, where)
	} else {
		network := "-"
		if x.Network.IsValid() {
			network = x.Network.String()
		}
		fmt.Fprintf(w, "client    %s  GeoIP network %s: %s\n", x.Client, network, where)
	}
	switch {
	case !x.ECS.IsValid():
		fmt.Fprintln(w, "scope     none: no ECS option, so a resolver reuses the answer for all its clients")
	case x.ECS.Bits() == 0:
		fmt.Fprintln(w, "scope     /0: the query has no client network, so a resolver reuses the answer for all its clients")
	case x.Scope == 0:
		fmt.Fprintln(w, "scope     /0: the answer is the same for every client")
	default:
		covered, _ := x.ECS.Addr().Prefix(x.Scope)
		fmt.Fprintf(w, "scope     /%d: a resolver reuses the answer for clients in %s\n", x.Scope, covered)
	}
	fmt.Fprintf(w, "reason    %s\n", x.Reason)
	if a := x.Assignment; a != nil {
		fmt.Fprintf(w, "assigned  %s instead of %s for %s: %s (unit demand %.1f qps)\n", a.Edge, a.Best, a.Reason, a.Detail, a.Demand)
	}
	fmt.Fprintln(w)
	return table(c, "RANK\tEDGE\tPOOL\tADDRESS\tDISTANCE_KM\tSCORE_MS\tBASIS\tMEASURED\tHEALTH\tANSWER", func(w *tabwriter.Writer) {
		for i, r := range x.Ranking {
			km, ms, measured, chosen := "-", "-", "-", ""
			if r.DistanceKm != nil {
				km = strconv.FormatFloat(*r.DistanceKm, 'f', 0, 64)
			}
			if r.ScoreMs != nil {
				ms = strconv.FormatFloat(*r.ScoreMs, 'f', 1, 64)
			}
			if m := r.Measured; m != nil {
				measured = fmt.Sprintf("rtt %.1fms loss %.0f%% age %.0fs n=%d", m.RTTMs, m.Loss*100, m.AgeS, m.Samples)
			}
			if r.Chosen {
				chosen = "*"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i+1, r.ID, r.Pool, addrString(r.Address), km, ms, r.Basis, measured, r.Health, chosen)
		}
	})
}
