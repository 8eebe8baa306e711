package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
)

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts instead of a table"}

func printJSON(c *cli.Context, v any) error {
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(c *cli.Context, header string, rows func(w *tabwriter.Writer)) error {
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	rows(w)
	return w.Flush()
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func zoneCommand() *cli.Command {
	return &cli.Command{
		Name:  "zone",
		Usage: "show or set the served zone",
		Subcommands: []*cli.Command{
			{
				Name:  "set",
				Usage: "set the zone apex: --name cdn.example.net --ns ns1.cdn.example.net=192.0.2.53 --contact hostmaster.example.net",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Required: true, Usage: "zone apex"},
					&cli.StringSliceFlag{Name: "ns", Required: true, Usage: "name server as NAME or NAME=ADDR[,ADDR] (glue for in-zone names); repeat"},
					&cli.StringFlag{Name: "contact", Required: true, Usage: "SOA contact, hostmaster.example.net or hostmaster@example.net"},
				},
				Action: func(c *cli.Context) error {
					s := config.ZoneSpec{Name: c.String("name"), Contact: c.String("contact")}
					for i, arg := range c.StringSlice("ns") {
						ns, err := parseNS(arg)
						if err != nil {
							return mapping.Within(fmt.Sprintf("--ns[%d]", i), err)
						}
						s.NameServers = append(s.NameServers, ns)
					}
					var z config.Zone
					if err := newClient(c).do("PUT", "/v1/zone", s, &z); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "zone %s serial %d\n", z.Name, z.Serial)
					return nil
				},
			},
			{
				Name:  "show",
				Usage: "print the zone",
				Flags: []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					var z config.Zone
					if err := newClient(c).do("GET", "/v1/zone", nil, &z); err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c, z)
					}
					fmt.Fprintf(c.App.Writer, "zone %s  contact %s  serial %d\n", z.Name, z.Contact, z.Serial)
					return table(c, "NS\tIPV4\tIPV6", func(w *tabwriter.Writer) {
						for _, ns := range z.NameServers {
							fmt.Fprintf(w, "%s\t%s\t%s\n", ns.Name, addrString(ns.IPv4), addrString(ns.IPv6))
						}
					})
				},
			},
		},
	}
}

// parseNS reads NAME or NAME=ADDR[,ADDR].
func parseNS(arg string) (config.NSSpec, error) {
	name, addrs, _ := strings.Cut(arg, "=")
	ns := config.NSSpec{Name: name}
	for a := range strings.SplitSeq(addrs, ",") {
		if a == "" {
			continue
		}
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil:
			return ns, mapping.FieldErrorf("address", "%q is not an IP address", a)
		case ip.Is4():
			ns.IPv4 = a
		default:
			ns.IPv6 = a
		}
	}
	return ns, nil
}

func edgeFlags(create bool) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "id", Required: true, Usage: "edge id, e.g. fra1"},
		&cli.StringFlag{Name: "ipv4", Usage: "IPv4 address answered for A queries"},
		&cli.StringFlag{Name: "ipv6", Usage: "IPv6 address answered for AAAA queries"},
		&cli.Float64Flag{Name: "lat", Required: create, Usage: "latitude, -90..90"},
		&cli.Float64Flag{Name: "lon", Required: create, Usage: "longitude, -180..180"},
		&cli.StringFlag{Name: "pool", Required: create, Usage: "pool the edge belongs to"},
		&cli.IntFlag{Name: "capacity", Usage: "answers per second the edge should receive (0: unlimited)"},
		&cli.StringFlag{Name: "check", Usage: "health check the name servers run: http://host/path or tcp://host:port (\"\" removes it)"},
	}
}

// edgeSpecFromFlags sends only the flags given, so `edge set` changes just
// those fields.
func edgeSpecFromFlags(c *cli.Context) config.EdgeSpec {
	s := config.EdgeSpec{ID: c.String("id")}
	str := func(name string) *string {
		if !c.IsSet(name) {
			return nil
		}
		v := c.String(name)
		return &v
	}
	s.IPv4, s.IPv6, s.Pool, s.Check = str("ipv4"), str("ipv6"), str("pool"), str("check")
	if c.IsSet("lat") {
		v := c.Float64("lat")
		s.Lat = &v
	}
	if c.IsSet("lon") {
		v := c.Float64("lon")
		s.Lon = &v
	}
	if c.IsSet("capacity") {
		v := c.Int("capacity")
		s.Capacity = &v
	}
	return s
}

func printEdges(c *cli.Context, edges []config.Edge) error {
	if c.Bool("json") {
		return printJSON(c, edges)
	}
	return table(c, "ID\tPOOL\tIPV4\tIPV6\tLAT\tLON\tCAPACITY\tCHECK\tSTATUS", func(w *tabwriter.Writer) {
		for _, e := range edges {
			check, status := e.Check, "active"
			if check == "" {
				check = "-"
			}
			if e.Draining {
				status = "draining"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%g\t%g\t%d\t%s\t%s\n", e.ID, e.Pool, addrString(e.IPv4), addrString(e.IPv6), e.Lat, e.Lon, e.Capacity, check, status)
		}
	})
}

func edgeCommand() *cli.Command {
	return &cli.Command{
		Name:  "edge",
		Usage: "manage edge servers",
		Subcommands: []*cli.Command{
			{
				Name: "add", Usage: "add an edge", Flags: append(edgeFlags(true), jsonFlag),
				Action: func(c *cli.Context) error {
					var e config.Edge
					if err := newClient(c).do("POST", "/v1/edges", edgeSpecFromFlags(c), &e); err != nil {
						return err
					}
					return printEdges(c, []config.Edge{e})
				},
			},
			{
				Name: "set", Usage: "change the given fields of an edge", Flags: append(edgeFlags(false), jsonFlag),
				Action: func(c *cli.Context) error {
					var e config.Edge
					if err := newClient(c).do("PATCH", "/v1/edges/"+url.PathEscape(c.String("id")), edgeSpecFromFlags(c), &e); err != nil {
						return err
					}
					return printEdges(c, []config.Edge{e})
				},
			},
			{
				Name: "list", Usage: "list edges", Flags: []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					var edges []config.Edge
					if err := newClient(c).do("GET", "/v1/edges", nil, &edges); err != nil {
						return err
					}
					return printEdges(c, edges)
				},
			},
			drainCommand("drain", "stop answering with an edge (it stays measured and checked)", true),
			drainCommand("undrain", "answer with a drained edge again", false),
			{
				Name: "rm", Usage: "remove an edge", Flags: []cli.Flag{&cli.StringFlag{Name: "id", Required: true}},
				Action: func(c *cli.Context) error {
					if err := newClient(c).do("DELETE", "/v1/edges/"+url.PathEscape(c.String("id")), nil, nil); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, "removed edge", c.String("id"))
					return nil
				},
			},
		},
	}
}

// drainCommand is `edge drain ID` / `edge undrain ID` (or --id ID).
func drainCommand(name, usage string, drain bool) *cli.Command {
	return &cli.Command{
		Name: name, Usage: usage, ArgsUsage: "ID",
		Flags: []cli.Flag{&cli.StringFlag{Name: "id"}, jsonFlag},
		Action: func(c *cli.Context) error {
			id := c.String("id")
			if id == "" {
				id = c.Args().First()
			}
			if id == "" || c.Args().Len() > 1 {
				return mapping.FieldErrorf("id", "give one edge: edgemap edge %s ID", name)
			}
			var e config.Edge
			if err := newClient(c).do("POST", "/v1/edges/"+url.PathEscape(id)+"/"+name, nil, &e); err != nil {
				return err
			}
			return printEdges(c, []config.Edge{e})
		},
	}
}

func propertyFlags(create bool) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "name", Required: true, Usage: "hostname under the zone, e.g. shop.cdn.example.net"},
		&cli.StringSliceFlag{Name: "pool", Required: create, Usage: "edge pool the property may use; repeat"},
		&cli.UintFlag{Name: "ttl", Usage: "answer TTL in seconds (default " + strconv.Itoa(config.DefaultTTL) + ")"},
		&cli.IntFlag{Name: "answers", Usage: "edges per answer, 1.." + strconv.Itoa(mapping.MaxAnswers) + " (default 1)"},
		&cli.StringFlag{Name: "all-down", Usage: "when every edge is down: serve-best (default: answer anyway) or nodata"},
	}
}

func propertySpecFromFlags(c *cli.Context) config.PropertySpec {
	s := config.PropertySpec{Name: c.String("name")}
	if c.IsSet("pool") {
		s.Pools = c.StringSlice("pool")
	}
	if c.IsSet("ttl") {
		v := uint32(min(c.Uint("ttl"), 1<<32-1))
		s.TTL = &v
	}
	if c.IsSet("answers") {
		v := c.Int("answers")
		s.Answers = &v
	}
	if c.IsSet("all-down") {
		v := c.String("all-down")
		s.AllDown = &v
	}
	return s
}

func printProperties(c *cli.Context, props []config.Property) error {
	if c.Bool("json") {
		return printJSON(c, props)
	}
	return table(c, "NAME\tPOOLS\tTTL\tANSWERS\tALL-DOWN", func(w *tabwriter.Writer) {
		for _, p := range props {
			allDown := p.AllDown
			if allDown == "" {
				allDown = string(mapping.AllDownServeBest)
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\n", p.Name, strings.Join(p.Pools, ","), p.TTL, p.Answers, allDown)
		}
	})
}

func propertyCommand() *cli.Command {
	return &cli.Command{
		Name:  "property",
		Usage: "manage properties (customer hostnames)",
		Subcommands: []*cli.Command{
			{
				Name: "add", Usage: "add a property", Flags: append(propertyFlags(true), jsonFlag),
				Action: func(c *cli.Context) error {
					var p config.Property
					if err := newClient(c).do("POST", "/v1/properties", propertySpecFromFlags(c), &p); err != nil {
						return err
					}
					return printProperties(c, []config.Property{p})
				},
			},
			{
				Name: "set", Usage: "change the given fields of a property", Flags: append(propertyFlags(false), jsonFlag),
				Action: func(c *cli.Context) error {
					var p config.Property
					if err := newClient(c).do("PATCH", "/v1/properties/"+url.PathEscape(c.String("name")), propertySpecFromFlags(c), &p); err != nil {
						return err
					}
					return printProperties(c, []config.Property{p})
				},
			},
			{
				Name: "list", Usage: "list properties", Flags: []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					var props []config.Property
					if err := newClient(c).do("GET", "/v1/properties", nil, &props); err != nil {
						return err
					}
					return printProperties(c, props)
				},
			},
			{
				Name: "rm", Usage: "remove a property", Flags: []cli.Flag{&cli.StringFlag{Name: "name", Required: true}},
				Action: func(c *cli.Context) error {
					if err := newClient(c).do("DELETE", "/v1/properties/"+url.PathEscape(c.String("name")), nil, nil); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, "removed property", c.String("name"))
					return nil
				},
			},
		},
	}
}

func applyCommand() *cli.Command {
	return &cli.Command{
		Name:  "apply",
		Usage: "make the server match a world file (idempotent; one transaction)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Required: true, Usage: "world file (YAML)"},
			&cli.BoolFlag{Name: "prune", Usage: "also remove edges and properties the file does not name"},
			jsonFlag,
		},
		Action: func(c *cli.Context) error {
			w, err := config.ReadWorld(c.String("file"))
			if err != nil {
				return err
			}
			var res config.ApplyResult
			if err := newClient(c).do("POST", "/v1/apply?prune="+strconv.FormatBool(c.Bool("prune")), w, &res); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, res)
			}
			if !res.Changed {
				fmt.Fprintf(c.App.Writer, "no changes (serial %d)\n", res.Serial)
				return nil
			}
			for _, s := range res.Created {
				fmt.Fprintln(c.App.Writer, "created", s)
			}
			for _, s := range res.Updated {
				fmt.Fprintln(c.App.Writer, "updated", s)
			}
			for _, s := range res.Deleted {
				fmt.Fprintln(c.App.Writer, "deleted", s)
			}
			fmt.Fprintf(c.App.Writer, "serial %d\n", res.Serial)
			return nil
		},
	}
}

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
