package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
)

// `edgemap customer verify`: does a customer's hostname reach the CDN?
// A customer points a name at a property with a CNAME in their own zone;
// verify follows that chain through a recursive resolver, as users'
// resolvers will, and says where it ends and what is wrong if it does not
// end at a property.

func customerCommand() *cli.Command {
	return &cli.Command{Name: "customer", Usage: "check customers' hostnames", Subcommands: []*cli.Command{{
		Name: "verify", ArgsUsage: "HOSTNAME",
		Usage: "follow HOSTNAME's CNAME chain through a resolver and say whether it reaches a property of the zone (exit status 1 if not)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "resolver", Usage: "recursive resolver to ask, host or host:port (default: the first nameserver of /etc/resolv.conf)"},
			&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "time limit of each query"},
		},
		Action: verifyCustomer,
	}}}
}

// maxVerifyChain bounds the CNAMEs verify follows: as many as the zone
// itself allows in a chain, which is more than a customer's name needs
// (one CNAME, to a property).
const maxVerifyChain = mapping.MaxCNAMEChain

func verifyCustomer(c *cli.Context) error {
	args, err := flagsAfterArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return mapping.FieldErrorf("HOSTNAME", "give one hostname: edgemap customer verify www.shop.example")
	}
	name, err := config.RecordName("HOSTNAME", args[0])
	if err != nil {
		return err
	}
	server, err := resolverAddr(c.String("resolver"))
	if err != nil {
		return err
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	var zone config.Zone
	var props []config.Property
	var edges []config.Edge
	if err := cl.do("GET", "/v1/zone", nil, &zone); err != nil {
		return err
	}
	if err := cl.do("GET", "/v1/properties", nil, &props); err != nil {
		return err
	}
	if err := cl.do("GET", "/v1/edges", nil, &edges); err != nil {
		return err
	}
	v := &verifier{server: server, dns: &dns.Client{Timeout: c.Duration("timeout")}}
	w := c.App.Writer
	fmt.Fprintf(w, "resolver  %s\n", server)

	// Walk the chain one CNAME at a time, asking for the CNAME itself, so
	// that every hop is seen and a loop is caught before a resolver gives
	// up on it with SERVFAIL.
	chain := []string{name}
	for at := name; ; {
		r, err := v.ask(at, dns.TypeCNAME)
		if err != nil {
			return err
		}
		if r.Rcode == dns.RcodeNameError {
			switch {
			case at == name:
				return fmt.Errorf("%s does not exist (NXDOMAIN): add `%s CNAME <property>.%s` to the customer's zone", at, at, zone.Name)
			case dns.IsSubDomain(zone.Name, at):
				return fmt.Errorf("the chain ends at %s, which does not exist in %s (NXDOMAIN): %s; a typo? see `edgemap property list`", at, zone.Name, strings.Join(chain, " -> "))
			}
			return fmt.Errorf("the chain ends at %s, which does not exist (NXDOMAIN): %s", at, strings.Join(chain, " -> "))
		}
		target := cnameOf(r, at)
		if target == "" {
			break
		}
		fmt.Fprintf(w, "chain     %s CNAME %s\n", at, target)
		if slices.Contains(chain, target) {
			return fmt.Errorf("the CNAMEs loop: %s -> %s; resolvers answer SERVFAIL", strings.Join(chain, " -> "), target)
		}
		if chain = append(chain, target); len(chain) > maxVerifyChain+1 {
			return fmt.Errorf("more than %d CNAMEs: %s; resolvers give up on long chains, point %s at a property directly", maxVerifyChain, strings.Join(chain, " -> "), name)
		}
		at = target
	}
	last := chain[len(chain)-1]
	answers, err := v.addresses(name, edges)
	if err != nil {
		return err
	}
	inZone := dns.IsSubDomain(zone.Name, last)
	i := slices.IndexFunc(props, func(p config.Property) bool { return p.Name == last })
	switch {
	case len(chain) == 1 && !inZone:
		if len(answers) > 0 {
			return fmt.Errorf("%s has no CNAME: it answers %s itself, from the customer's zone, so lookups never reach %s; replace its records with `%s CNAME <property>.%s`",
				name, strings.Join(answers, ", "), zone.Name, name, zone.Name)
		}
		return fmt.Errorf("%s has no CNAME and no address: add `%s CNAME <property>.%s` to the customer's zone", name, name, zone.Name)
	case !inZone:
		return fmt.Errorf("the chain ends at %s, outside %s: %s%s; point the CNAME at a property", last, zone.Name, strings.Join(chain, " -> "), answered(answers))
	case i < 0:
		return fmt.Errorf("%s is in %s but is not a property (see `edgemap property list`): fix the CNAME, or add the property%s", last, zone.Name, answered(answers))
	}
	p := props[i]
	fmt.Fprintf(w, "property  %s (pools %s; ttl %d; %d answer(s))\n", p.Name, strings.Join(p.Pools, ", "), p.TTL, p.Answers)
	if len(answers) == 0 {
		return fmt.Errorf("%s reaches the property %s, but it answers no address: are all its edges down with all_down nodata, or have they no address of either family?", name, p.Name)
	}
	fmt.Fprintf(w, "answer    %s\n", strings.Join(answers, ", "))
	fmt.Fprintf(w, "ok: %s reaches the property %s\n", name, p.Name)
	return nil
}

func answered(answers []string) string {
	if len(answers) == 0 {
		return ""
	}
	return " (it answers " + strings.Join(answers, ", ") + ")"
}

// resolverAddr is --resolver as host:port, or the first nameserver of
// /etc/resolv.conf.
func resolverAddr(flag string) (string, error) {
	if flag == "" {
		cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(cfg.Servers) == 0 {
			return "", fmt.Errorf("no resolver: /etc/resolv.conf names none (%v); give --resolver", err)
		}
		return net.JoinHostPort(cfg.Servers[0], cfg.Port), nil
	}
	if ap, err := netip.ParseAddrPort(flag); err == nil {
		return ap.String(), nil
	}
	if a, err := netip.ParseAddr(flag); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	if _, _, err := net.SplitHostPort(flag); err == nil {
		return flag, nil
	}
	return net.JoinHostPort(flag, "53"), nil
}

// verifier asks one recursive resolver.
type verifier struct {
	server string
	dns    *dns.Client
}

// ask sends a recursive query for name and type, over UDP and again over
// TCP if the answer was truncated. Answers other than NOERROR and NXDOMAIN
// are errors saying what they mean here.
func (v *verifier) ask(name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	r, _, err := v.dns.Exchange(m, v.server)
	if err == nil && r.Truncated {
		tcp := *v.dns
		tcp.Net = "tcp"
		r, _, err = tcp.Exchange(m, v.server)
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return nil, fmt.Errorf("no answer from the resolver %s for %s %s within %v: is it running and reachable? (--resolver)", v.server, name, dns.TypeToString[qtype], v.dns.Timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("the resolver %s refused the query for %s %s: nothing listens there (--resolver)", v.server, name, dns.TypeToString[qtype])
	case err != nil:
		return nil, fmt.Errorf("resolver %s: %s %s: %w", v.server, name, dns.TypeToString[qtype], err)
	}
	switch r.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return r, nil
	case dns.RcodeServerFailure:
		return nil, fmt.Errorf("the resolver %s answered SERVFAIL for %s %s: the zone of %s is broken or unreachable (a lame or missing delegation, a DNSSEC failure)", v.server, name, dns.TypeToString[qtype], name)
	case dns.RcodeRefused:
		return nil, fmt.Errorf("the resolver %s REFUSED %s %s: it does not resolve for this host; give --resolver", v.server, name, dns.TypeToString[qtype])
	}
	return nil, fmt.Errorf("the resolver %s answered %s for %s %s", v.server, dns.RcodeToString[r.Rcode], name, dns.TypeToString[qtype])
}

// cnameOf is the target of name's CNAME in r, or "".
func cnameOf(r *dns.Msg, name string) string {
	for _, rr := range r.Answer {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
			return strings.ToLower(c.Target)
		}
	}
	return ""
}

// addresses are the A and AAAA records a resolver answers for name, as
// users get them, each with the edge it is ("A 192.0.2.1 (fra1)").
func (v *verifier) addresses(name string, edges []config.Edge) ([]string, error) {
	var out []string
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r, err := v.ask(name, qtype)
		if err != nil {
			return nil, err
		}
		for _, rr := range r.Answer {
			var a netip.Addr
			switch x := rr.(type) {
			case *dns.A:
				a, _ = netip.AddrFromSlice(x.A.To4())
			case *dns.AAAA:
				a, _ = netip.AddrFromSlice(x.AAAA)
			default:
				continue
			}
			edge := "not an edge of this name server"
			if i := slices.IndexFunc(edges, func(e config.Edge) bool { return e.IPv4 == a || e.IPv6 == a }); i >= 0 {
				edge = "edge " + edges[i].ID
			}
			out = append(out, fmt.Sprintf("%s %s (%s)", dns.TypeToString[qtype], a, edge))
		}
	}
	return out, nil
}

// flagsAfterArgs reads the command's flags that follow its arguments, as
// in `customer verify www.shop.example --resolver 127.0.0.1` (urfave/cli
// stops reading flags at the first argument), and returns the arguments.
func flagsAfterArgs(c *cli.Context) ([]string, error) {
	args := c.Args().Slice()
	var positional []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		positional, args = append(positional, args[0]), args[1:]
	}
	if len(args) == 0 {
		return positional, nil
	}
	set := flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
	set.SetOutput(io.Discard)
	for _, f := range c.Command.Flags {
		if err := f.Apply(set); err != nil {
			return nil, err
		}
	}
	if err := set.Parse(args); err != nil {
		return nil, fmt.Errorf("%w (see --help)", err)
	}
	var err error
	set.Visit(func(f *flag.Flag) {
		if e := c.Set(f.Name, f.Value.String()); e != nil && err == nil {
			err = e
		}
	})
	return append(positional, set.Args()...), err
}
