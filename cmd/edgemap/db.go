package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/mapping"
	"github.com/edgemap/edgemap/store"
)

func dbCommand() *cli.Command {
	return &cli.Command{Name: "db", Usage: "inspect a database file offline", Subcommands: []*cli.Command{{
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
	var counts []string
	for _, b := range slices.Sorted(maps.Keys(r.Records)) {
		counts = append(counts, fmt.Sprintf("%s %d", b, r.Records[b]))
	}
	if len(counts) > 0 {
		fmt.Fprintf(w, "records: %s\n", strings.Join(counts, ", "))
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
	fmt.Fprintln(w, "ok")
	return nil
}
