package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/api"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/config"
	"github.com/edgemap/edgemap/cmd/edgemap/internal/node"
	"github.com/edgemap/edgemap/store"
)

// The operator's commands beside the configuration's: apply and its dry
// run, the offline check, the event log.

func applyCommand() *cli.Command {
	return &cli.Command{
		Name:  "apply",
		Usage: "make the server match a world file (idempotent; one transaction), printing what changes",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Required: true, Usage: "world file (YAML)"},
			&cli.BoolFlag{Name: "prune", Usage: "also remove the edges, properties and targets the file does not name, of the kinds it lists (a kind it leaves out is kept)"},
			&cli.BoolFlag{Name: "prune-keys", Usage: "with --prune, also remove the probe keys of removed edges (without it, an apply that would leave such keys is refused)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print what would change, change nothing (and fail where the apply would)"},
			jsonFlag,
		},
		Action: func(c *cli.Context) error {
			w, err := config.ReadWorld(c.String("file"))
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			q := url.Values{"prune": {strconv.FormatBool(c.Bool("prune"))}}
			if c.Bool("prune-keys") {
				q.Set("prune_keys", "true")
			}
			if c.Bool("dry-run") {
				q.Set("dry_run", "true")
			}
			var res config.ApplyResult
			if err := cl.do("POST", "/v1/apply?"+q.Encode(), w, &res); err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c, res)
			}
			return printApply(c.App.Writer, res)
		},
	}
}

// printApply prints an apply's diff, one record a line: "+" added (with
// its fields), "~" changed (each field old -> new), "-" removed.
func printApply(w io.Writer, res config.ApplyResult) error {
	if res.Diff.Empty() {
		_, err := fmt.Fprintf(w, "no changes (serial %d)\n", res.Serial)
		return err
	}
	var added, changed, removed int
	for _, r := range res.Diff.Records {
		switch r.Change {
		case config.Added:
			added++
			fmt.Fprintf(w, "+ %s %s  %s\n", r.Kind, r.Key, recordFields(r.Record))
		case config.Changed:
			changed++
			var fs []string
			for _, f := range r.Fields {
				fs = append(fs, fmt.Sprintf("%s: %s -> %s", f.Field, f.Old, f.New))
			}
			fmt.Fprintf(w, "~ %s %s  %s\n", r.Kind, r.Key, strings.Join(fs, ", "))
		case config.Removed:
			removed++
			fmt.Fprintf(w, "- %s %s\n", r.Kind, r.Key)
		}
	}
	summary := fmt.Sprintf("%d added, %d changed, %d removed", added, changed, removed)
	if res.DryRun {
		_, err := fmt.Fprintf(w, "dry run: %s; nothing was changed (serial %d)\n", summary, res.Serial)
		return err
	}
	_, err := fmt.Fprintf(w, "applied: %s; serial %d\n", summary, res.Serial)
	return err
}

// recordFields is an added record's fields as "field: value, ...", in the
// order of its JSON.
func recordFields(raw json.RawMessage) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return string(raw)
	}
	var out []string
	for dec.More() {
		k, _ := dec.Token()
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			break
		}
		out = append(out, fmt.Sprintf("%v: %s", k, v))
	}
	return strings.Join(out, ", ")
}

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "check world files offline, by the rules a server applies them with (for ExecStartPre or CI); exit 1 if any is wrong",
		ArgsUsage: "[FILE...]",
		Flags:     []cli.Flag{&cli.StringSliceFlag{Name: "file", Aliases: []string{"f"}, Usage: "world file (YAML); repeat, or give files as arguments"}},
		Action: func(c *cli.Context) error {
			files := append(c.StringSlice("file"), c.Args().Slice()...)
			if len(files) == 0 {
				return fmt.Errorf("--file: give a world file: edgemap check -f world.yaml")
			}
			bad := 0
			for _, f := range files {
				if !checkWorldFile(c.App.Writer, f) {
					bad++
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d world files have errors", bad, len(files))
			}
			return nil
		},
	}
}

// checkWorldFile prints what is wrong with one world file, every error a
// line naming its field, or that it is fine; it reports whether it is.
func checkWorldFile(w io.Writer, path string) bool {
	world, err := config.ReadWorld(path)
	if err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, e := range te.Errors {
				fmt.Fprintf(w, "%s: %s\n", path, e)
			}
		} else {
			fmt.Fprintln(w, err)
		}
		return false
	}
	errs := config.CheckWorld(world)
	for _, e := range errs {
		fmt.Fprintf(w, "%s: %v\n", path, e)
	}
	if len(errs) > 0 {
		if len(errs) == config.MaxWorldErrors {
			fmt.Fprintf(w, "%s: (stopped at %d errors)\n", path, config.MaxWorldErrors)
		}
		return false
	}
	zone := "no zone (the server's stays)"
	if world.Zone != nil {
		zone = "zone " + world.Zone.Name
	}
	fmt.Fprintf(w, "%s: ok: %s, %d edges, %d properties, %d targets, %d static records\n", path, zone, len(world.Edges), len(world.Properties), len(world.Targets), len(world.Records))
	return true
}

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "print the event log: configuration changes and who made them, health transitions, failovers, GeoIP loads",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Usage: "events since a time ago (90m, 1h, 7d) or a time (2026-11-24T07:00:00Z)", DefaultText: "the latest --limit"},
			&cli.IntFlag{Name: "limit", Value: 20, Usage: "events at most, without --since (1.." + strconv.Itoa(api.MaxEventsPage) + ")"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new events as they happen, until interrupted"},
			&cli.BoolFlag{Name: "changes", Usage: "print each configuration change's records and fields under it"},
			jsonFlag,
		},
		Action: printEvents,
	}
}

func printEvents(c *cli.Context) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(c.Int("limit"))}}
	if s := c.String("since"); s != "" {
		if _, err := api.ParseSince(s, time.Now()); err != nil {
			return fmt.Errorf("--since: %w", err)
		}
		q.Set("since", s)
		q.Set("limit", strconv.Itoa(api.MaxEventsPage))
	}
	for {
		var page struct {
			Events []node.Event `json:"events"`
			Next   uint64       `json:"next"`
		}
		if err := cl.do("GET", "/v1/events?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		for _, e := range page.Events {
			if c.Bool("json") {
				if err := json.NewEncoder(c.App.Writer).Encode(e); err != nil {
					return err
				}
				continue
			}
			printEvent(c.App.Writer, e, c.Bool("changes"))
		}
		full := len(page.Events) == api.MaxEventsPage
		if !c.Bool("follow") && !(full && c.IsSet("since")) {
			return nil
		}
		// After the first page, ask after the last event seen; a follow
		// waits at the server for the next one.
		q = url.Values{"after": {strconv.FormatUint(page.Next, 10)}, "limit": {strconv.Itoa(api.MaxEventsPage)}}
		if c.Bool("follow") && !full {
			q.Set("wait", api.MaxEventsWait.String())
		}
		cl.http.Timeout = api.MaxEventsWait + 30*time.Second
	}
}

// printEvent prints an event in one line (and with changes, its records
// under it): its local time, kind and message.
func printEvent(w io.Writer, e node.Event, changes bool) {
	fmt.Fprintf(w, "%s  %-8s  %s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Kind, e.Message)
	if e.Reason != "" && !strings.Contains(e.Message, e.Reason) {
		fmt.Fprintf(w, "%21s  %-8s  why: %s\n", "", "", e.Reason)
	}
	if !changes {
		return
	}
	for _, r := range e.Changes {
		line := fmt.Sprintf("%s %s %s", r.Change, r.Kind, r.Key)
		for _, f := range r.Fields {
			line += fmt.Sprintf(", %s: %s -> %s", f.Field, f.Old, f.New)
		}
		fmt.Fprintf(w, "%21s  %-8s  %s\n", "", "", line)
	}
	if e.MoreChanges > 0 {
		fmt.Fprintf(w, "%21s  %-8s  and %d more\n", "", "", e.MoreChanges)
	}
}

// dbBackup is `db backup -o FILE`: a consistent copy of a running
// server's database, through its admin API, written to FILE.tmp with mode
// 0600 and renamed only once whole and checked.
func dbBackup(c *cli.Context) error {
	out := c.String("output")
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	cl.http.Timeout = 0 // the server bounds the transfer by the file's size
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	defer os.Remove(tmp) // after a rename there is nothing left to remove
	n, err := cl.download("/v1/db/backup", f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	r, err := store.Check(tmp, store.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("backup: the copy does not open: %w", err)
	}
	if len(r.Problems) > 0 || len(r.BadRecords) > 0 {
		return fmt.Errorf("backup: the copy is damaged (%d problems): the server's file may be; run edgemap db check on it", len(r.Problems)+len(r.BadRecords))
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync() // the rename itself survives a crash
		d.Close()
	}
	fmt.Fprintf(c.App.Writer, "%s: %d bytes, schema %d, %s; checked\n", out, n, r.Schema, recordCounts(r))
	return nil
}
