package main

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/miekg/dns"
	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/mapping"
)

// The zone's content besides the map: static records, and what the parent
// zone needs to delegate the zone.

func recordCommand() *cli.Command {
	types := make([]string, len(mapping.RecordTypes))
	for i, t := range mapping.RecordTypes {
		types[i] = string(t)
	}
	return &cli.Command{Name: "record", Usage: "manage static records: TXT, CAA, MX, and A, AAAA, CNAME of names that are not properties", Subcommands: []*cli.Command{
		request("add", `add a record: --name _acme-challenge.shop.cdn.example.net --type TXT --value TOKEN --ttl 60`, []cli.Flag{
			must("name", "owner name, at or below the zone ('_' allowed: _acme-challenge, _dmarc)"),
			must("type", strings.Join(types, ", ")),
			must("value", `the data: 192.0.2.1, target.example.net, any text, 0 issue "letsencrypt.org", 10 mail.example.net`),
			&cli.UintFlag{Name: "ttl", Usage: "seconds, 1..86400", DefaultText: "the zone's ttl"},
			jsonFlag,
		}, "POST", fixed("/v1/records"), func(c *cli.Context) (any, error) {
			s := config.RecordSpec{Name: c.String("name"), Type: c.String("type"), Value: c.String("value")}
			s.TTL = optional(c, "ttl", func(name string) uint32 { return uint32(min(c.Uint(name), 1<<32-1)) })
			return s, nil
		}, one(printRecords)),
		request("list", "list the static records (--name: of one name)", []cli.Flag{&cli.StringFlag{Name: "name", Usage: "only this name's"}, jsonFlag},
			"GET", func(c *cli.Context) string {
				if name := c.String("name"); name != "" {
					return "/v1/records?name=" + url.QueryEscape(name)
				}
				return "/v1/records"
			}, nil, printRecords),
		request("rm", "remove the records of a name and type (--value: only that one)", []cli.Flag{
			must("name", "owner name"), must("type", strings.Join(types, ", ")), &cli.StringFlag{Name: "value", Usage: "the one record to remove (default: every one of the type)"},
		}, "DELETE", func(c *cli.Context) string {
			q := url.Values{"name": {c.String("name")}, "type": {c.String("type")}}
			if c.IsSet("value") {
				q.Set("value", c.String("value"))
			}
			return "/v1/records?" + q.Encode()
		}, nil, func(c *cli.Context, removed []config.Record) error {
			for _, r := range removed {
				fmt.Fprintf(c.App.Writer, "removed %s %d %s %s\n", r.Name, r.TTL, r.Type, r.Value)
			}
			return nil
		}),
	}}
}

// printRecords prints records as a zone file would hold them.
func printRecords(c *cli.Context, records []config.Record) error {
	return show(c, records, "NAME\tTTL\tTYPE\tVALUE", func(w *tabwriter.Writer) {
		for _, r := range records {
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", r.Name, r.TTL, r.Type, r.Value)
		}
	})
}

func delegationCommand() *cli.Command {
	return request("delegation", "print the records the parent zone needs to delegate the zone here (NS and glue), ready to paste", nil,
		"GET", fixed("/v1/zone"), nil, printDelegation)
}

// printDelegation prints what the parent zone must publish for resolvers
// to find the zone: its NS records and, for name servers inside the zone,
// their addresses (glue, without which a resolver could not reach them:
// their names are answered only by themselves). In zone-file syntax, with
// the zone's NS TTL; the parent's operator may choose its own.
func printDelegation(c *cli.Context, z config.Zone) error {
	w := c.App.Writer
	parent := "."
	if _, rest, ok := strings.Cut(z.Name, "."); ok && rest != "" {
		parent = rest
	}
	fmt.Fprintf(w, "; Delegation of %s: add these records to its parent zone, %s\n", z.Name, parent)
	fmt.Fprintf(w, "; (or give them to the parent's operator, for a registered domain the registrar).\n")
	var glue, outside []string
	for _, ns := range z.NameServers {
		fmt.Fprintln(w, (&dns.NS{Hdr: rrHeader(z.Name, dns.TypeNS, z.NSTTL), Ns: ns.Name}).String())
		if !dns.IsSubDomain(z.Name, ns.Name) {
			outside = append(outside, ns.Name)
			continue
		}
		if ns.IPv4.IsValid() {
			glue = append(glue, (&dns.A{Hdr: rrHeader(ns.Name, dns.TypeA, z.NSTTL), A: net.IP(ns.IPv4.AsSlice())}).String())
		}
		if ns.IPv6.IsValid() {
			glue = append(glue, (&dns.AAAA{Hdr: rrHeader(ns.Name, dns.TypeAAAA, z.NSTTL), AAAA: net.IP(ns.IPv6.AsSlice())}).String())
		}
	}
	if len(glue) > 0 {
		fmt.Fprintf(w, "; Glue: these name servers are inside %s, so the parent publishes their addresses too.\n", z.Name)
		for _, g := range glue {
			fmt.Fprintln(w, g)
		}
	}
	for _, name := range outside {
		fmt.Fprintf(w, "; %s is outside %s: no glue; its own zone must answer its addresses.\n", name, z.Name)
	}
	fmt.Fprintf(w, "; No DS record: edgemap does not sign the zone (no DNSSEC). The parent must publish none,\n")
	fmt.Fprintf(w, "; or validating resolvers would reject every answer of the zone.\n")
	return nil
}

func rrHeader(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}
