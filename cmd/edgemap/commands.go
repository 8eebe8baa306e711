package main

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
)

// The configuration commands: each is a request to the admin API and a
// table (or --json) of what it answers.

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts instead of a table"}

// show prints v as JSON with --json, else as a table: header, then the
// rows rows writes.
func show(c *cli.Context, v any, header string, rows func(w *tabwriter.Writer)) error {
	if c.Bool("json") {
		return printJSON(c, v)
	}
	return table(c, header, rows)
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

// request is a command that sends one request and prints what comes back
// as a T: `edge add`, `property list`, `edge drain`...
func request[T any](name, usage string, flags []cli.Flag, method string, path func(*cli.Context) string, body func(*cli.Context) (any, error), print func(*cli.Context, T) error) *cli.Command {
	return &cli.Command{Name: name, Usage: usage, Flags: flags, Action: func(c *cli.Context) error {
		var b any
		if body != nil {
			var err error
			if b, err = body(c); err != nil {
				return err
			}
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		var out T
		if err := cl.do(method, path(c), b, &out); err != nil {
			return err
		}
		return print(c, out)
	}}
}

// remove is `KIND rm X` or `KIND rm --FLAG X`.
func remove(kind, flag, arg, usage string, path func(string) string) *cli.Command {
	return &cli.Command{Name: "rm", Usage: usage, ArgsUsage: arg,
		Flags: []cli.Flag{&cli.StringFlag{Name: flag, Usage: "the " + kind + " to remove (or give it as the argument)"}},
		Action: func(c *cli.Context) error {
			key, err := keyArg(c, flag, "edgemap "+kind+" rm "+arg)
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			if err := cl.do("DELETE", path(key), nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, "removed", kind, key)
			return nil
		}}
}

// keyArg is the record a command names, as --FLAG X or as its one
// argument X.
func keyArg(c *cli.Context, flag, usage string) (string, error) {
	key := c.String(flag)
	switch {
	case key != "" && c.Args().Present() && c.Args().First() != key:
		return "", mapping.FieldErrorf(flag, "given as --%s %s and as the argument %s: give one", flag, key, c.Args().First())
	case key == "":
		key = c.Args().First()
	}
	if key == "" || c.Args().Len() > 1 {
		return "", mapping.FieldErrorf(flag, "give one: %s", usage)
	}
	return key, nil
}

// must is a flag that must be given.
func must(name, usage string) cli.Flag {
	return &cli.StringFlag{Name: name, Required: true, Usage: usage}
}

func fixed(path string) func(*cli.Context) string { return func(*cli.Context) string { return path } }

// one prints a single record as a list of one.
func one[T any](print func(*cli.Context, []T) error) func(*cli.Context, T) error {
	return func(c *cli.Context, v T) error { return print(c, []T{v}) }
}

// optional are the flags given, as a spec's optional fields: `set` changes
// just those.
func optional[T any](c *cli.Context, name string, get func(string) T) *T {
	if !c.IsSet(name) {
		return nil
	}
	v := get(name)
	return &v
}

func zoneCommand() *cli.Command {
	return &cli.Command{Name: "zone", Usage: "show or set the served zone", Subcommands: []*cli.Command{
		request("set", "set the zone apex: --name cdn.example.net --ns ns1.cdn.example.net=192.0.2.53 --contact hostmaster.example.net",
			[]cli.Flag{
				must("name", "zone apex"),
				&cli.GenericFlag{Name: "ns", Required: true, Value: &nsFlag{}, DefaultText: "none",
					Usage: "name server as NAME or NAME=ADDR[,ADDR] (glue for in-zone names); repeat for each, or for each address of one"},
				must("contact", "SOA contact, hostmaster.example.net or hostmaster@example.net"),
				timerFlag("ttl", "TTL of the SOA and of static records that set none", mapping.DefaultTimers.TTL),
				timerFlag("ns-ttl", "TTL of the NS records and the name servers' addresses", mapping.DefaultTimers.NSTTL),
				timerFlag("refresh", "SOA refresh", mapping.DefaultTimers.Refresh),
				timerFlag("retry", "SOA retry, below refresh", mapping.DefaultTimers.Retry),
				timerFlag("expire", "SOA expire, at least refresh + retry", mapping.DefaultTimers.Expire),
				timerFlag("minimum", "SOA minimum: how long NXDOMAIN and NODATA are cached", mapping.DefaultTimers.Minimum),
			}, "PUT", fixed("/v1/zone"), zoneSpecFromFlags, func(c *cli.Context, z config.Zone) error {
				_, err := fmt.Fprintf(c.App.Writer, "zone %s serial %d\n", z.Name, z.Serial)
				return err
			}),
		request("show", "print the zone", []cli.Flag{jsonFlag}, "GET", fixed("/v1/zone"), nil, func(c *cli.Context, z config.Zone) error {
			if !c.Bool("json") {
				fmt.Fprintf(c.App.Writer, "zone %s  contact %s  serial %d\n", z.Name, z.Contact, z.Serial)
				fmt.Fprintf(c.App.Writer, "ttl %d  ns-ttl %d  refresh %d  retry %d  expire %d  minimum %d\n",
					z.TTL, z.NSTTL, z.Refresh, z.Retry, z.Expire, z.Minimum)
			}
			return show(c, z, "NS\tIPV4\tIPV6", func(w *tabwriter.Writer) {
				for _, ns := range z.NameServers {
					fmt.Fprintf(w, "%s\t%s\t%s\n", ns.Name, addrString(ns.IPv4), addrString(ns.IPv6))
				}
			})
		}),
		delegationCommand(),
	}}
}

// nsFlag is --ns: every value whole. A string slice flag would split
// "ns2.cdn.example.net=198.51.100.53,2001:db8:53::2" at the comma and
// publish "2001:db8:53::2." as a name server.
type nsFlag struct{ values []string }

func (f *nsFlag) Set(v string) error { f.values = append(f.values, v); return nil }
func (f *nsFlag) String() string     { return strings.Join(f.values, " ") }

// timerFlag is a zone timer in seconds; `zone set` sets the whole zone, so
// one left out is its default.
func timerFlag(name, usage string, def uint32) cli.Flag {
	return &cli.UintFlag{Name: name, Usage: usage + ", seconds; one left out is set to its default", DefaultText: strconv.Itoa(int(def))}
}

func zoneSpecFromFlags(c *cli.Context) (any, error) {
	timer := func(name string) uint32 { return uint32(min(c.Uint(name), 1<<32-1)) }
	s := config.ZoneSpec{Name: c.String("name"), Contact: c.String("contact"),
		TTL: timer("ttl"), NSTTL: timer("ns-ttl"), Refresh: timer("refresh"), Retry: timer("retry"), Expire: timer("expire"), Minimum: timer("minimum")}
	byName := map[string]int{}
	for i, arg := range c.Generic("ns").(*nsFlag).values {
		ns, err := parseNS(arg)
		if err != nil {
			return nil, mapping.Within(fmt.Sprintf("--ns[%d]", i), err)
		}
		// --ns N=V4 --ns N=V6 is one name server with both addresses.
		j, seen := byName[strings.TrimSuffix(ns.Name, ".")]
		if !seen {
			byName[strings.TrimSuffix(ns.Name, ".")] = len(s.NameServers)
			s.NameServers = append(s.NameServers, ns)
			continue
		}
		have := &s.NameServers[j]
		for _, a := range []struct {
			have        *string
			add, family string
		}{{&have.IPv4, ns.IPv4, "IPv4"}, {&have.IPv6, ns.IPv6, "IPv6"}} {
			switch {
			case a.add == "" || a.add == *a.have:
			case *a.have != "":
				return nil, mapping.FieldErrorf(fmt.Sprintf("--ns[%d]", i), "%s has two %s addresses, %s and %s: a name server's glue is one of each", ns.Name, a.family, *a.have, a.add)
			default:
				*a.have = a.add
			}
		}
	}
	return s, nil
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
		case ip.Is4() && ns.IPv4 != "", !ip.Is4() && ns.IPv6 != "":
			return ns, mapping.FieldErrorf("address", "two addresses of one family (%s): a name server's glue is one IPv4 and one IPv6 address", a)
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
		must("id", "edge id, e.g. fra1"),
		&cli.StringFlag{Name: "ipv4", Usage: "IPv4 address answered for A queries"},
		&cli.StringFlag{Name: "ipv6", Usage: "IPv6 address answered for AAAA queries"},
		&cli.Float64Flag{Name: "lat", Required: create, Usage: "latitude, -90..90"},
		&cli.Float64Flag{Name: "lon", Required: create, Usage: "longitude, -180..180"},
		&cli.StringFlag{Name: "pool", Required: create, Usage: "pool the edge belongs to"},
		&cli.IntFlag{Name: "capacity", Usage: "answers per second the edge should receive (0: unlimited)"},
		&cli.StringFlag{Name: "check", Usage: "health check the name servers run: http://host/path or tcp://host:port (\"\" removes it)"},
		jsonFlag,
	}
}

func edgeSpecFromFlags(c *cli.Context) (any, error) {
	return config.EdgeSpec{ID: c.String("id"),
		IPv4: optional(c, "ipv4", c.String), IPv6: optional(c, "ipv6", c.String), Pool: optional(c, "pool", c.String),
		Check: optional(c, "check", c.String), Lat: optional(c, "lat", c.Float64), Lon: optional(c, "lon", c.Float64),
		Capacity: optional(c, "capacity", c.Int)}, nil
}

// printEdges lists edges with their state in the published map: up, down
// (with what says so, since when and why) or draining.
func printEdges(c *cli.Context, edges []config.EdgeState) error {
	return show(c, edges, "ID\tPOOL\tIPV4\tIPV6\tLAT\tLON\tCAPACITY\tCHECK\tSTATE\tWHY", func(w *tabwriter.Writer) {
		for _, e := range edges {
			check, why := cmp.Or(e.Check, "-"), "-"
			if h := e.Health; h != nil && h.Source != "none" {
				why = fmt.Sprintf("%s %s since %s", h.Source, map[bool]string{true: "up", false: "down"}[h.Up], h.Since.Local().Format("2006-01-02 15:04:05"))
				if h.Reason != "" {
					why += ": " + h.Reason
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%g\t%g\t%d\t%s\t%s\t%s\n", e.ID, e.Pool, addrString(e.IPv4), addrString(e.IPv6), e.Lat, e.Lon, e.Capacity, check, e.State, why)
		}
	})
}

func edgeCommand() *cli.Command {
	edgePath := func(c *cli.Context) string { return "/v1/edges/" + url.PathEscape(c.String("id")) }
	return &cli.Command{Name: "edge", Usage: "manage edge servers", Subcommands: []*cli.Command{
		request("add", "add an edge", edgeFlags(true), "POST", fixed("/v1/edges"), edgeSpecFromFlags, one(printEdges)),
		request("set", "change the given fields of an edge", edgeFlags(false), "PATCH", edgePath, edgeSpecFromFlags, one(printEdges)),
		request("list", "list edges", []cli.Flag{jsonFlag}, "GET", fixed("/v1/edges"), nil, printEdges),
		drainCommand("drain", "stop answering with an edge (it stays measured and checked)"),
		drainCommand("undrain", "answer with a drained edge again"),
		remove("edge", "id", "ID", "remove an edge", func(id string) string { return "/v1/edges/" + url.PathEscape(id) }),
	}}
}

// drainCommand is `edge drain ID` / `edge undrain ID` (or --id ID).
func drainCommand(name, usage string) *cli.Command {
	cmd := request(name, usage, []cli.Flag{&cli.StringFlag{Name: "id", Usage: "the edge (or give it as the argument)"}, jsonFlag}, "POST", func(c *cli.Context) string {
		id, _ := keyArg(c, "id", "")
		return "/v1/edges/" + url.PathEscape(id) + "/" + name
	}, nil, one(printEdges))
	cmd.ArgsUsage = "ID"
	send := cmd.Action
	cmd.Action = func(c *cli.Context) error {
		if _, err := keyArg(c, "id", "edgemap edge "+name+" ID"); err != nil {
			return err
		}
		return send(c)
	}
	return cmd
}

func propertyFlags(create bool) []cli.Flag {
	return []cli.Flag{
		must("name", "hostname under the zone, e.g. shop.cdn.example.net"),
		&cli.StringSliceFlag{Name: "pool", Required: create, Usage: "edge pool the property may use; repeat"},
		// The defaults are the API's, for a new property; a flag's own
		// zero Value would be shown instead (and sent, were it set).
		&cli.UintFlag{Name: "ttl", Usage: "answer TTL in seconds", DefaultText: defaultFor(create, strconv.Itoa(config.DefaultTTL))},
		&cli.IntFlag{Name: "answers", Usage: "edges per answer, 1.." + strconv.Itoa(mapping.MaxAnswers), DefaultText: defaultFor(create, strconv.Itoa(config.DefaultAnswers))},
		&cli.StringFlag{Name: "all-down", Usage: "when every edge is down: serve-best (answer with the best anyway) or nodata", DefaultText: defaultFor(create, string(mapping.AllDownServeBest))},
		jsonFlag,
	}
}

// defaultFor is the default a flag of `add` shows; `set` changes only the
// flags given, so it has none ("unchanged").
func defaultFor(create bool, value string) string {
	if create {
		return value
	}
	return "unchanged"
}

func propertySpecFromFlags(c *cli.Context) (any, error) {
	s := config.PropertySpec{Name: c.String("name"), Answers: optional(c, "answers", c.Int), AllDown: optional(c, "all-down", c.String),
		TTL: optional(c, "ttl", func(name string) uint32 { return uint32(min(c.Uint(name), 1<<32-1)) })}
	if c.IsSet("pool") {
		s.Pools = c.StringSlice("pool")
	}
	return s, nil
}

func printProperties(c *cli.Context, props []config.Property) error {
	return show(c, props, "NAME\tPOOLS\tTTL\tANSWERS\tALL-DOWN", func(w *tabwriter.Writer) {
		for _, p := range props {
			allDown := cmp.Or(p.AllDown, string(mapping.AllDownServeBest))
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\n", p.Name, strings.Join(p.Pools, ","), p.TTL, p.Answers, allDown)
		}
	})
}

func propertyCommand() *cli.Command {
	propertyPath := func(c *cli.Context) string { return "/v1/properties/" + url.PathEscape(c.String("name")) }
	return &cli.Command{Name: "property", Usage: "manage properties (customer hostnames)", Subcommands: []*cli.Command{
		request("add", "add a property", propertyFlags(true), "POST", fixed("/v1/properties"), propertySpecFromFlags, one(printProperties)),
		request("set", "change the given fields of a property", propertyFlags(false), "PATCH", propertyPath, propertySpecFromFlags, one(printProperties)),
		request("list", "list properties", []cli.Flag{jsonFlag}, "GET", fixed("/v1/properties"), nil, printProperties),
		remove("property", "name", "NAME", "remove a property", func(name string) string { return "/v1/properties/" + url.PathEscape(name) }),
	}}
}

func targetCommand() *cli.Command {
	flags := []cli.Flag{must("block", "client network (any prefix length)"), must("probe", "address:port inside the block that agents TCP-connect to")}
	return &cli.Command{Name: "target", Usage: "manage targets: client networks the probes measure", Subcommands: []*cli.Command{
		request("add", "add a target: --block 203.0.113.0/24 --probe 203.0.113.10:443", flags, "POST", fixed("/v1/map/targets"), targetSpecFromFlags, printAddedTarget),
		request("list", "list targets with each edge's freshest RTT", []cli.Flag{jsonFlag}, "GET", fixed("/v1/map/targets"), nil, printTargets),
		remove("target", "block", "BLOCK", "remove a target", func(block string) string { return "/v1/map/targets?block=" + url.QueryEscape(block) }),
	}}
}

func targetSpecFromFlags(c *cli.Context) (any, error) {
	return config.TargetSpec{Block: c.String("block"), Probe: c.String("probe")}, nil
}

func printAddedTarget(c *cli.Context, _ config.Target) error {
	_, err := fmt.Fprintf(c.App.Writer, "added target %s via %s\n", c.String("block"), c.String("probe"))
	return err
}

func printTargets(c *cli.Context, targets []config.MeasuredTarget) error {
	now := time.Now()
	return show(c, targets, "BLOCK\tPROBE\tMEASURED (edge smoothed-rtt loss age, best first)", func(w *tabwriter.Writer) {
		for _, t := range targets {
			parts := []string{}
			for _, m := range t.Measured {
				parts = append(parts, fmt.Sprintf("%s %.1fms %.0f%% %s", m.Edge, m.RTTMs, m.Loss*100, now.Sub(m.At).Round(time.Second)))
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", t.Block, t.Probe, cmp.Or(strings.Join(parts, ", "), "-"))
		}
	})
}

func keyCommand() *cli.Command {
	flags := []cli.Flag{must("id", "the key's id, as the agent sends it"), must("edge", "the edge this key may report for")}
	return &cli.Command{Name: "key", Usage: "manage probe agent keys", Subcommands: []*cli.Command{
		request("add", "create a key bound to an edge and print its secret once", flags, "POST", fixed("/v1/keys"), keySpecFromFlags, printNewKey),
		request("list", "list keys (never their secrets)", []cli.Flag{jsonFlag}, "GET", fixed("/v1/keys"), nil, printKeys),
		remove("key", "id", "ID", "remove a key; its agent is refused from then on", func(id string) string { return "/v1/keys/" + url.PathEscape(id) }),
	}}
}

func keySpecFromFlags(c *cli.Context) (any, error) {
	if err := secretOutputPrivate(c.App.Writer); err != nil {
		return nil, err
	}
	return config.KeySpec{ID: c.String("id"), Edge: c.String("edge")}, nil
}

// secretOutputPrivate refuses, before a key is made, to print its secret
// into a file that others can read: `key add > /etc/edgemap/fra1.key`
// creates the file with the shell's umask, commonly 022, world-readable.
// Refused, nothing is lost (no key was made); printed, the secret would
// have to be rotated.
func secretOutputPrivate(w io.Writer) error {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	name := f.Name()
	if path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd())); err == nil {
		name = path // the file the shell redirected stdout to
	}
	return fmt.Errorf("the secret would go to %s, which others can read (mode %04o); no key was made. "+
		"Make the file private first: chmod 600 it, or create it with (umask 077; edgemap key add ... > FILE) or install -m 600 /dev/null FILE",
		name, fi.Mode().Perm())
}

// printNewKey prints the secret alone on stdout, for a file, and what to
// do with it on stderr.
func printNewKey(c *cli.Context, k config.Key) error {
	fmt.Fprintln(c.App.Writer, k.Secret)
	_, err := fmt.Fprintf(c.App.ErrWriter, "key %s for edge %s: the secret above is shown only now; put it in a file only the agent can read (edgemap probe --secret-file)\n", k.ID, k.Edge)
	return err
}

func printKeys(c *cli.Context, keys []config.Key) error {
	return show(c, keys, "ID\tEDGE\tCREATED", func(w *tabwriter.Writer) {
		for _, k := range keys {
			fmt.Fprintf(w, "%s\t%s\t%s\n", k.ID, k.Edge, k.Created.Format(time.RFC3339))
		}
	})
}

func mapCommand() *cli.Command {
	return &cli.Command{Name: "map", Usage: "inspect the map", Subcommands: []*cli.Command{{
		Name: "explain", Usage: "rank a property's edges for a query as it reaches the name server, as the resolver does", Action: explain,
		Flags: []cli.Flag{
			must("property", "the property's name"),
			&cli.StringFlag{Name: "client", Usage: "the user's address, sent as ECS by the resolver"},
			&cli.IntFlag{Name: "source-prefix", Usage: "the ECS source prefix length the resolver sends", DefaultText: "24 for IPv4, 56 for IPv6, as RFC 7871 recommends"},
			&cli.StringFlag{Name: "resolver", Usage: "the address the query comes from; alone, a query without ECS"},
			&cli.StringFlag{Name: "family", Value: "A", Usage: "A or AAAA"},
			jsonFlag,
		},
	}}}
}

// explain is `map explain`: the API's explanation, printed.
func explain(c *cli.Context) error {
	q := url.Values{"property": {c.String("property")}, "family": {c.String("family")}}
	for _, f := range []string{"client", "resolver"} {
		if c.IsSet(f) {
			q.Set(f, c.String(f))
		}
	}
	if c.IsSet("source-prefix") {
		q.Set("source_prefix", strconv.Itoa(c.Int("source-prefix")))
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	var x mapping.Explanation
	if err := cl.do("GET", "/v1/map/explain?"+q.Encode(), nil, &x); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c, x)
	}
	return printExplanation(c, &x)
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
