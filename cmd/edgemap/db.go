package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

func dbCommand() *cli.Command {
	backup := &cli.Command{Name: "backup", Usage: "copy a running server's database, consistent as of one moment, through its admin API",
		Flags: append([]cli.Flag{&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true,
			Usage: "file to write (mode 0600; written to FILE.tmp, checked, then renamed)"}}, clientFlags()...),
		Action: dbBackup}
	return &cli.Command{Name: "db", Usage: "back up a running server's database, or check a database file offline", Subcommands: []*cli.Command{backup, {
		Name: "check", ArgsUsage: "FILE",
		Usage: "read a database file whole, read-only, and list any damage (stop the server using it first, or check a copy)",
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return mapping.FieldErrorf("FILE", "give one database file: edgemap db check FILE")
			}
			return dbCheck(c, c.Args().First())
		},
	}}}
}

// recordCounts are the records of each bucket Check read, "edges 10,
// events 3, ...".
func recordCounts(r store.CheckReport) string {
	var counts []string
	for _, b := range slices.Sorted(maps.Keys(r.Records)) {
		counts = append(counts, fmt.Sprintf("%s %d", b, r.Records[b]))
	}
	return strings.Join(counts, ", ")
}

// dbCheck prints what store.Check found and fails if the file is damaged.
func dbCheck(c *cli.Context, path string) error {
	r, err := store.Check(path, store.Options{})
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("%w; stop the server using it, or check a copy", err)
	}
	if err != nil {
		return err
	}
	w := c.App.Writer
	schema := strconv.Itoa(r.Schema)
	if len(r.Problems) > 0 {
		schema = "unread"
	}
	fmt.Fprintf(w, "%s: schema %s, %d pages of %d bytes\n", path, schema, r.Pages, r.PageSize)
	if counts := recordCounts(r); counts != "" {
		fmt.Fprintf(w, "records: %s\n", counts)
	}
	for _, m := range r.Warnings {
		fmt.Fprintln(w, "warning:", m)
	}
	for _, m := range r.Problems {
		fmt.Fprintln(w, "damaged:", m)
	}
	for _, m := range r.BadRecords {
		fmt.Fprintln(w, "bad record:", m)
	}
	switch {
	case len(r.Problems) > 0:
		return fmt.Errorf("%s is damaged: the server refuses it; restore it from a backup, or move it aside to start a new database", path)
	case len(r.BadRecords) > 0:
		return fmt.Errorf("%s has records the server cannot read; restore it from a backup", path)
	}
	if err := checkContent(w, path); err != nil {
		return err
	}
	fmt.Fprintln(w, "ok")
	return nil
}

// checkContent reads what the records mean, past their encoding: the
// configuration as a whole by the rules a server builds its map with, and
// every event log entry.
func checkContent(w io.Writer, path string) error {
	st, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer st.Close()
	cfg, rev, err := st.ConfigAt()
	if err != nil {
		return err
	}
	if err := config.Check(cfg); err != nil {
		return fmt.Errorf("%s: its configuration (revision %d) is inconsistent, so a server would build no map from it: %w", path, rev, err)
	}
	zone := "no zone"
	if cfg.Zone != nil {
		zone = fmt.Sprintf("zone %s serial %d", cfg.Zone.Name, cfg.Zone.Serial)
	}
	fmt.Fprintf(w, "configuration: revision %d, %s, %d edges, %d properties, %d targets, %d static records; consistent\n", rev, zone, len(cfg.Edges), len(cfg.Properties), len(cfg.Targets), len(cfg.Records))
	bad := 0
	for after := uint64(0); ; {
		page, err := st.EventsAfter(after, 1000)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			var ev node.Event
			if json.Unmarshal(e.Data, &ev) != nil || ev.Seq != e.Seq {
				if bad++; bad <= 20 {
					fmt.Fprintf(w, "bad record: bucket \"events\" seq %d: not an event this build reads\n", e.Seq)
				}
			}
		}
		after = page[len(page)-1].Seq
	}
	if bad > 0 {
		return fmt.Errorf("%s: %d event log entries do not read; the server skips them", path, bad)
	}
	return nil
}
